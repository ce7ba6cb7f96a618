"""``fieldear train``: labelled recordings in, a quantized bundle and an evaluation report out.

Steps: import and check the data (convert.dataset), leak-free CV splits (convert.splits), evaluate
the candidate families by cross-validation within the time budget (cheapest to train first), pick
by macro-F1 (ties: the model cheaper to run on the device), quantize every fold's model of the
winner to full int8 and score its validation clips with the runtime's own interpreter (so the CV
numbers are those of int8 models), retrain the winner on all data, quantize it, and write the bundle
(``runtime.bundle.write_bundle``, atomic) with report.md/json and plots inside.

Families:
* ``backbone``: the committed int8 aisfx backbone (embeddings computed by the TFLite file the Pi
  runs) + a small head (logistic regression or one-hidden-layer MLP) trained on block embeddings;
  two stages: backbone.tflite (role embedding), head.tflite (role classifier).
* ``cnn``: a ~65k-parameter CNN from scratch on the 16 kHz SMALL log-mel; one stage.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from convert.bundle_meta import (
    _dataset_summary,
    _fieldear_version,
    publish_bundle,
    thresholds_from_oof,
)
from convert.data.default_set import default_manifest
from convert.families.backbone import BackboneFamily
from convert.families.base import (
    Budget,
    Trial,
    _macro_f1,
    _OverBudget,
    _scores_report,
    pool_scores,
)
from convert.families.cnn import CnnFamily
from convert.options import FAMILIES, TrainOptions
from runtime.errors import BundleError, FieldearError

log = logging.getLogger(__name__)

STRICT_MAX_LOSS_POINTS = 1.0


# ---------------------------------------------------------------- families


FAMILY_CLASSES = {"backbone": BackboneFamily, "cnn": CnnFamily}


# ---------------------------------------------------------------- the run


def _check_out(options: TrainOptions) -> Path:
    out = Path(options.out)
    if out.exists() and not options.force:
        raise BundleError(f"output directory exists: {out}", "choose another --out or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise BundleError(f"output path exists and is not a directory: {out}", "choose another --out")
    return out


def _cv_scheme(dataset, splits) -> str:
    if dataset.items and all(c.fold is not None for c in dataset.items):
        return f"leave-one-fold-out over the {len(splits)} folds given in the manifest"
    return f"stratified group {len(splits)}-fold by clip (duplicates and groups kept together)"


def _fold_rows(splits, y, scores, labels) -> list[dict]:
    rows = []
    for k, (_, va) in enumerate(splits):
        rep = _scores_report(y[va], scores[va], labels)
        rows.append({"name": str(k + 1), "n": int(len(va)), "accuracy": rep["accuracy"], "macro_f1": rep["macro"]["f1"]})
    return rows


def _fold_names(dataset, splits) -> list[str]:
    names = []
    for k, (_, va) in enumerate(splits):
        folds = sorted({dataset.items[i].fold for i in va if dataset.items[i].fold is not None})
        names.append(",".join(folds) if folds else str(k + 1))
    return names


def select(trials: list[Trial], y, labels) -> tuple[Trial, str]:
    """Best CV macro-F1 (to 3 decimals); ties go to the model cheaper to run, then fewer parameters."""
    def key(t: Trial):
        return (-round(_macro_f1(y, t.oof_float, labels), 3), t.device_cost, t.params, t.pooling != "mean")

    ranked = sorted(trials, key=key)
    best = ranked[0]
    f1 = _macro_f1(y, best.oof_float, labels)
    why = f"best cross-validated macro-F1 ({f1:.3f})"
    if len(ranked) > 1 and round(_macro_f1(y, ranked[1].oof_float, labels), 3) == round(f1, 3):
        why += f"; tied with {ranked[1].name}, chosen as the cheaper model to run"
    return best, why


def int8_cv(family, trial: Trial, splits, y, n_labels, seed) -> tuple[np.ndarray, list[dict]]:
    """Quantize each fold's model and score its validation clips with the runtime interpreter."""
    from runtime.model.interpreter import Runner

    oof = np.zeros((len(y), n_labels), dtype=np.float32)
    sizes = []
    for k, ((tr, va), model) in enumerate(zip(splits, trial.fold_models)):
        flat, _ = family.to_tflite(model, tr, seed)
        sizes.append(len(flat))
        runner = Runner(flat)
        for i in va:
            oof[i] = pool_scores(family.int8_block_scores(runner, i), trial.pooling, n_labels)
        log.info("int8 fold %d/%d: %d validation clips scored", k + 1, len(splits), len(va))
    return oof, sizes


def train(options: TrainOptions) -> dict:
    """Run the whole training; returns a summary dict (also written into the bundle)."""
    from convert.data.dataset import load_dataset
    from convert.data.splits import make_splits
    from convert.report import quantization_parity

    t_start = time.monotonic()
    out = _check_out(options)
    unknown = [c for c in options.candidates if c not in FAMILY_CLASSES]
    if unknown or not options.candidates:
        raise FieldearError(f"unknown candidate(s) {', '.join(unknown) or '(none given)'}",
                            f"choose from: {', '.join(FAMILIES)}")
    if options.folds < 2:
        raise FieldearError(f"--folds must be at least 2 (got {options.folds})")
    budget = Budget(options.time_budget)

    dataset = load_dataset(options.data)
    labels = list(dataset.labels)
    n_labels = len(labels)
    y = dataset.y()
    splits = make_splits(dataset, options.folds, options.seed)
    scheme = _cv_scheme(dataset, splits)
    log.info("%d clips, %d labels; CV: %s", len(y), n_labels, scheme)

    families = {name: FAMILY_CLASSES[name](options) for name in FAMILIES if name in options.candidates}
    trials: list[Trial] = []
    notes: list[dict] = []
    for name, family in families.items():
        estimate = family.estimate_seconds(dataset, len(splits))
        if trials and estimate > budget.remaining:
            note = (f"skipped: estimated {estimate:.0f} s of cross-validation, {max(0.0, budget.remaining):.0f} s "
                    f"of the {options.time_budget:.0f} s time budget left (raise --time-budget to try it)")
            log.warning("candidate %s %s", name, note)
            notes.append({"name": name, "note": note})
            continue
        log.info("candidate %s: about %.0f s (%.0f s of the budget left)", name, estimate, budget.remaining)
        family.prepare(dataset)
        try:
            # the first candidate always finishes (there must be a model); later ones stop when over budget
            trials.extend(family.cross_validate(y, splits, n_labels, options.seed, budget if trials else None, labels))
        except _OverBudget as exc:
            log.warning("candidate %s %s", name, exc)
            notes.append({"name": name, "note": str(exc)})
    if not trials:
        raise FieldearError("no candidate could be evaluated", "raise --time-budget")

    best, why = select(trials, y, labels)
    family = families[best.family]
    log.info("chosen: %s (%s)", best.name, why)

    # int8 cross-validation of the winner: the numbers reported are those of quantized models
    oof_int8, _ = int8_cv(family, best, splits, y, n_labels, options.seed)
    parity = quantization_parity([labels[i] for i in y], best.oof_float, oof_int8, labels)
    parity["int8_loss_points"] = round(100.0 * (parity["float_accuracy"] - parity["int8_accuracy"]), 3)
    parity["scope"] = ("out-of-fold validation clips; each fold's model quantized and run with the runtime interpreter; "
                       + family.parity_reference)
    log.info("int8 vs float on %d validation clips: top-1 agreement %.3f, accuracy %.3f vs %.3f",
             parity["n_clips"], parity["top1_agreement"], parity["int8_accuracy"], parity["float_accuracy"])
    if options.strict and parity["int8_loss_points"] > STRICT_MAX_LOSS_POINTS:
        raise FieldearError(
            f"int8 quantization loses {parity['int8_loss_points']:.1f} accuracy points "
            f"(float {parity['float_accuracy']:.3f}, int8 {parity['int8_accuracy']:.3f}); --strict allows {STRICT_MAX_LOSS_POINTS:.0f}",
            "run without --strict to accept it, or add more training data",
        )

    # final model on all data
    all_idx = np.arange(len(y))
    log.info("training %s on all %d clips", best.name, len(y))
    final = family.fit(all_idx, y, n_labels, best.setting, options.seed)
    flat, keras_model = family.to_tflite(final, all_idx, options.seed)
    files, stages = family.bundle_parts(flat)

    y_pred = [labels[i] for i in oof_int8.argmax(axis=1)]
    fold_names = _fold_names(dataset, splits)
    fold_rows = _fold_rows(splits, y, oof_int8, labels)
    for row, fname in zip(fold_rows, fold_names):
        row["name"] = fname
    candidates = []
    for t in trials:
        rep = _scores_report(y, t.oof_float, labels)
        candidates.append({
            "name": t.name, "family": t.family, "pooling": t.pooling,
            "cv_macro_f1": rep["macro"]["f1"], "cv_accuracy": rep["accuracy"],
            "fold_macro_f1": [r["macro_f1"] for r in _fold_rows(splits, y, t.oof_float, labels)],
            "seconds": round(t.seconds, 2), "params": t.params, "size_bytes": t.size_bytes,
            "note": "float CV scores" + ("; chosen" if t is best else ""),
        })
    candidates.extend(notes)
    file_sizes = {name: (len(c) if isinstance(c, (bytes, bytearray)) else Path(c).stat().st_size) for name, c in files.items()}
    summary = _dataset_summary(dataset, options.path_alias)
    name = options.name or out.name
    result = {
        "name": name,
        "fieldear_version": _fieldear_version(),
        "labels": labels,
        "dataset": summary,
        "cv": {"scheme": scheme + "; scores of the int8 models", "y_true": [labels[i] for i in y], "y_pred": y_pred,
               "scores": oof_int8.round(5).tolist(), "folds": fold_rows},
        "candidates": candidates,
        "choice": {"name": best.name, "why": why + "; ties go to the model cheaper to run"},
        "model": {"size_bytes": int(sum(file_sizes.values())), "params": family.params_count(final), "files": file_sizes,
                  "frontend": "backbone (44.1 kHz, 96 mels, 2.32 s blocks)" if best.family == "backbone"
                  else "small (16 kHz, 64 mels, 1 s blocks)", "clip_pooling": best.pooling,
                  "training_blocks": family.training_note()},
        "quantization": parity,
        "seed": options.seed,
        "time_budget_s": options.time_budget,
    }
    computed, thresholds = thresholds_from_oof(result)
    result["train_seconds"] = round(time.monotonic() - t_start, 1)

    meta = {
        "name": name,
        "fieldear_version": result["fieldear_version"],
        "labels": labels,
        "frontend": family.params.to_dict(),
        "stages": stages,
        "clip_pooling": best.pooling,
        "thresholds": thresholds,
        "metrics": {
            "cv_scheme": result["cv"]["scheme"],
            "cv_accuracy": computed["report"]["accuracy"],
            "cv_macro_f1": computed["report"]["macro"]["f1"],
            "cv_weighted_f1": computed["report"]["weighted"]["f1"],
            "folds": fold_rows,
            "quantization": parity,
            "candidate": best.name,
        },
        "dataset": {"fingerprint": dataset.fingerprint, "n_clips": len(dataset), "classes": dataset.counts},
        "training": {"seed": options.seed, "time_budget_s": options.time_budget,
                     "candidates": [c["name"] for c in candidates], "choice": best.name,
                     "train_seconds": result["train_seconds"]},
    }
    bundle = publish_bundle(out, files, meta, result, force=options.force)
    log.info("bundle %s: %s, CV accuracy %.3f, macro-F1 %.3f (int8), %.0f s", out, best.name,
             meta["metrics"]["cv_accuracy"], meta["metrics"]["cv_macro_f1"], time.monotonic() - t_start)
    return {"bundle": str(out), "sha256": bundle.sha256, "result": result, "meta": meta}


# ---------------------------------------------------------------- the default model


def train_default(shared: str | Path, options: TrainOptions) -> dict:
    """Build the default training set from ``shared`` and train the default bundle (backbone + head)."""
    shared = Path(shared).resolve()
    with tempfile.TemporaryDirectory(prefix="fieldear-default-") as tmp:
        manifest = default_manifest(shared, Path(tmp) / "default.csv")
        opts = replace(options, data=manifest, name=options.name or "default",
                       path_alias=((str(manifest), "(default set: ESC-10 + great tit)"), (str(shared), "../shared/data")))
        return train(opts)
