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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from runtime.errors import BundleError, FieldearError

log = logging.getLogger(__name__)

FAMILIES = ("backbone", "cnn")
STRICT_MAX_LOSS_POINTS = 1.0
# Device cost per second of audio, for ties and the report (multiply-accumulates).
BACKBONE_MACS_PER_BLOCK = 1.93e9
BACKBONE_PARAMS = 4_690_000  # aisfx EmbeddingNet (4 conv blocks, hl1=64), as ported to runtime/models/aisfx
CNN_SECONDS_PER_BLOCK_EPOCH = 3.0e-3  # measured on the 2-core dev machine (refined after a fold)
BACKBONE_SECONDS_PER_BLOCK = 0.03  # int8 TFLite backbone + frontend, 2-core dev machine
# Level augmentation for the backbone heads (-12 dB, +6 dB; clipped): the backbone has no level
# normalisation and field recordings vary in level. On ESC-10's official folds it moved logistic
# regression from 0.932 to 0.940 (max pooling).
TRAIN_GAINS = (0.25, 2.0)
# Training blocks this many dB below their clip's loudest block carry no evidence of the clip's label
# (the silence before and after a bark or a sneeze, ESC-10's zero padding): they are trained towards
# equal scores for every label instead of the clip's label. Fixed in advance (no tuning); a clip of
# one block is never affected. On 4 ESC-10 labels x 25 clips it moved CV accuracy from 0.97 to 0.99.
QUIET_DB = 20.0


@dataclass
class TrainOptions:
    data: str | Path
    out: str | Path
    seed: int = 0
    time_budget: float = 120.0
    force: bool = False
    strict: bool = False
    candidates: tuple[str, ...] = FAMILIES
    folds: int = 5
    cache_dir: str | Path | None = None
    name: str | None = None
    threads: int | None = None
    cnn_epochs: int | None = None
    augment: bool = True  # backbone heads: also train on level-shifted copies of the training audio
    path_alias: tuple[tuple[str, str], ...] = ()  # (prefix, replacement) pairs for paths written to the report


@dataclass
class Trial:
    """One candidate setting evaluated by CV."""

    name: str
    family: str
    setting: object  # HeadSpec or CnnSpec
    pooling: str
    oof_float: np.ndarray  # (n_clips, n_labels) pooled out-of-fold float scores
    fold_models: list
    seconds: float
    params: int
    size_bytes: int
    device_cost: float  # MACs per second of audio (rough)
    fold_info: list = field(default_factory=list)


def _fieldear_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fieldear")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def pool_scores(block_scores: np.ndarray, pooling: str, n_labels: int) -> np.ndarray:
    """Clip score from block scores, exactly as runtime.model.Model.pool does."""
    if len(block_scores) == 0:
        return np.zeros(n_labels, dtype=np.float32)
    return block_scores.max(axis=0) if pooling == "max" else block_scores.mean(axis=0)


def _scores_report(y_true: np.ndarray, scores: np.ndarray, labels: list[str]) -> dict:
    from runtime.metrics import classification_report

    pred = [labels[i] for i in scores.argmax(axis=1)]
    return classification_report([labels[i] for i in y_true], pred, labels)


def _macro_f1(y_true, scores, labels) -> float:
    return _scores_report(y_true, scores, labels)["macro"]["f1"]


class Budget:
    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds = float(seconds)
        self.clock = clock
        self.start = clock()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    @property
    def remaining(self) -> float:
        return self.seconds - self.elapsed


# ---------------------------------------------------------------- families


class BackboneFamily:
    """int8 backbone embeddings + small heads."""

    name = "backbone"
    parity_reference = "float = the float head on the same int8 backbone embeddings (the backbone's own parity is in runtime/models/aisfx/port_report.json)"

    def __init__(self, options: TrainOptions):
        from convert.embed import BACKBONE_FILE
        from convert.heads import HeadSpec
        from runtime.frontend import BACKBONE

        self.options = options
        self.params = BACKBONE
        self.backbone_path = BACKBONE_FILE
        if not self.backbone_path.is_file():
            raise BundleError(f"the backbone model is missing: {self.backbone_path}", "run `make backbone` or restore the file from git")
        self.specs = [HeadSpec("logreg", c=0.01), HeadSpec("mlp", hidden=128, alpha=1e-2)]
        self.gains = TRAIN_GAINS if options.augment else ()
        self.quiet_db = QUIET_DB
        self.inputs: list[np.ndarray] | None = None
        self.augmented: list[list[np.ndarray]] = []
        self.levels: list[list[np.ndarray]] = []  # per copy (plain, then each gain): block levels in dB

    def estimate_seconds(self, dataset, n_folds: int) -> float:
        blocks = sum(max(1.0, c.duration_s / self.params.block_hop_seconds) for c in dataset.items)
        return blocks * BACKBONE_SECONDS_PER_BLOCK * (1 + len(self.gains)) + 5.0 * n_folds

    def prepare(self, dataset) -> None:
        from convert.embed import dataset_embeddings

        copies = [dataset_embeddings(dataset.items, self.backbone_path, self.params, gain=g, with_levels=True,
                                     cache_dir=self.options.cache_dir, threads=self.options.threads)
                  for g in (1.0,) + tuple(self.gains)]
        self.inputs = copies[0][0]
        self.augmented = [c[0] for c in copies[1:]]
        self.levels = [c[1] for c in copies]

    def quiet(self, levels: np.ndarray) -> np.ndarray:
        """Which blocks of one clip (their levels in dB, not empty) lie ``quiet_db`` or more below its loudest."""
        return levels < levels.max() - self.quiet_db

    def training_set(self, idx, y, n_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, sample weights): block embeddings of clips idx and of their level-augmented copies (training
        only, never validation). A block ``quiet_db`` below its clip's loudest is entered once per label with
        weight 1/n_labels (trained towards equal scores: it says nothing about the label)."""
        xs, ys, ws = [], [], []
        for embs, levels in zip([self.inputs] + self.augmented, self.levels):
            for i in idx:
                e, lv = embs[i], levels[i]
                if not len(e):
                    continue
                quiet = self.quiet(lv)
                xs.append(e[~quiet])
                ys.append(np.full(int((~quiet).sum()), y[i], dtype=np.int64))
                ws.append(np.ones(int((~quiet).sum())))
                if quiet.any():
                    n = int(quiet.sum())
                    xs.append(np.tile(e[quiet], (n_labels, 1)))
                    ys.append(np.repeat(np.arange(n_labels, dtype=np.int64), n))
                    ws.append(np.full(n * n_labels, 1.0 / n_labels))
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)

    def block_count(self) -> int:
        return int(sum(len(e) for e in self.inputs))

    def training_note(self) -> str:
        """How the head's training blocks were made, for the report."""
        n = sum(len(lv) for copy in self.levels for lv in copy)
        quiet = sum(int(self.quiet(lv).sum()) for copy in self.levels for lv in copy if len(lv))
        gains = ", ".join(f"{20 * np.log10(g):+.0f} dB" for g in self.gains)
        return (f"blocks of every clip{' and of level-shifted copies (' + gains + ')' if gains else ''}; "
                f"{quiet} of {n} blocks at least {self.quiet_db:.0f} dB below their clip's loudest block "
                "trained towards equal scores for every label")

    def device_cost(self) -> float:
        return BACKBONE_MACS_PER_BLOCK / self.params.block_hop_seconds

    def cross_validate(self, y, splits, n_labels, seed, budget: Budget | None, labels) -> list[Trial]:
        from convert.heads import fit_head

        trials = []
        for spec in self.specs:
            t0 = time.monotonic()
            block_scores: list[np.ndarray | None] = [None] * len(y)
            models = []
            for k, (tr, va) in enumerate(splits):
                x_tr, y_tr, w_tr = self.training_set(tr, y, n_labels)
                head = fit_head(x_tr, y_tr, n_labels, spec, seed, sample_weight=w_tr)
                models.append(head)
                for i in va:
                    block_scores[i] = head.predict_proba(self.inputs[i]) if len(self.inputs[i]) else np.zeros((0, n_labels))
            seconds = time.monotonic() - t0
            for pooling in ("mean", "max"):
                oof = np.stack([pool_scores(b, pooling, n_labels) for b in block_scores])
                trials.append(Trial(name=f"backbone+{spec.name}/{pooling}", family=self.name, setting=spec,
                                    pooling=pooling, oof_float=oof, fold_models=models, seconds=seconds,
                                    params=models[0].n_params,
                                    size_bytes=self.backbone_path.stat().st_size + models[0].n_params,
                                    device_cost=self.device_cost()))
            log.info("CV %s: macro-F1 mean-pooled %.3f, max-pooled %.3f (%.1f s)", spec.name,
                     _macro_f1(y, trials[-2].oof_float, labels), _macro_f1(y, trials[-1].oof_float, labels), seconds)
        return trials

    def fit(self, idx, y, n_labels, setting, seed):
        from convert.heads import fit_head

        x, yy, w = self.training_set(idx, y, n_labels)
        return fit_head(x, yy, n_labels, setting, seed, sample_weight=w)

    def to_tflite(self, model, idx, seed) -> tuple[bytes, object]:
        """(int8 flatbuffer, float keras model) for a fitted head, calibrated on the blocks of clips idx."""
        from convert.heads import head_to_keras
        from convert.quantize import quantize_int8, representative_sample
        from runtime.interpreter import Runner

        keras_model = head_to_keras(model)
        x = np.concatenate([self.inputs[i] for i in idx if len(self.inputs[i])])
        out = Runner(self.backbone_path).output_spec
        lo = (-128 - out["zero_point"]) * out["scale"]
        hi = (127 - out["zero_point"]) * out["scale"]
        flat = quantize_int8(keras_model, representative_sample(x, seed), input_range=(lo, hi))
        return flat, keras_model

    def float_block_scores(self, model, i) -> np.ndarray:
        return model.predict_proba(self.inputs[i])

    def int8_block_scores(self, runner, i) -> np.ndarray:
        return runner.run(self.inputs[i])

    def bundle_parts(self, flat: bytes) -> tuple[dict, list]:
        from runtime.interpreter import Runner

        bb, head = Runner(self.backbone_path), Runner(flat)
        files = {"backbone.tflite": self.backbone_path, "head.tflite": flat}
        stages = [
            {"file": "backbone.tflite", "role": "embedding", "input": bb.input_spec, "output": bb.output_spec},
            {"file": "head.tflite", "role": "classifier", "input": head.input_spec, "output": head.output_spec},
        ]
        return files, stages

    def params_count(self, model) -> int:
        return int(BACKBONE_PARAMS + model.n_params)


class CnnFamily:
    """Small CNN from scratch on SMALL log-mel blocks."""

    name = "cnn"
    parity_reference = "float = the Keras model before quantization"

    def __init__(self, options: TrainOptions):
        from convert.cnn import CnnSpec
        from runtime.frontend import SMALL

        self.options = options
        self.params = SMALL
        spec = CnnSpec()
        if options.cnn_epochs:
            spec = replace(spec, epochs=int(options.cnn_epochs), patience=min(spec.patience, int(options.cnn_epochs)))
        self.spec = spec
        self.inputs: list[np.ndarray] | None = None
        self.seconds_per_block_epoch = CNN_SECONDS_PER_BLOCK_EPOCH

    def expected_epochs(self) -> float:
        return min(self.spec.epochs, max(self.spec.start_from_epoch + self.spec.patience, 0.6 * self.spec.epochs))

    def fit_seconds(self, n_blocks: float) -> float:
        return n_blocks * self.expected_epochs() * self.seconds_per_block_epoch + 3.0

    def estimate_seconds(self, dataset, n_folds: int) -> float:
        blocks = sum(max(1.0, c.duration_s / self.params.block_hop_seconds) for c in dataset.items)
        per_fold = self.fit_seconds(blocks * (1 - 1 / n_folds) * (1 - self.spec.val_fraction))
        return per_fold * n_folds

    def prepare(self, dataset) -> None:
        from convert.embed import dataset_blocks

        self.inputs = dataset_blocks(dataset.items, self.params)

    def block_count(self) -> int:
        return int(sum(len(b) for b in self.inputs))

    def device_cost(self, model=None) -> float:
        return 12e6 / self.params.block_hop_seconds

    def cross_validate(self, y, splits, n_labels, seed, budget: Budget | None, labels) -> list[Trial]:
        from convert.cnn import fit_cnn
        from convert.quantize import keras_predict

        t0 = time.monotonic()
        block_scores: list[np.ndarray | None] = [None] * len(y)
        models, infos = [], []
        for k, (tr, va) in enumerate(splits):
            model, info = fit_cnn([self.inputs[i] for i in tr], y[tr], n_labels, self.spec, seed + k)
            models.append(model)
            infos.append(info)
            for i in va:
                block_scores[i] = keras_predict(model, self.inputs[i])
            if info["epochs"] and info["train_blocks"]:
                self.seconds_per_block_epoch = info["seconds"] / (info["epochs"] * info["train_blocks"])
            left = len(splits) - k - 1
            if left and budget is not None:
                need = left * (time.monotonic() - t0) / (k + 1)
                if need > budget.remaining:
                    raise _OverBudget(f"stopped after fold {k + 1} of {len(splits)}: {need:.0f} s more needed, "
                                      f"{max(0.0, budget.remaining):.0f} s of the time budget left")
        seconds = time.monotonic() - t0
        trials = []
        for pooling in ("mean", "max"):
            oof = np.stack([pool_scores(b, pooling, n_labels) for b in block_scores])
            trials.append(Trial(name=f"cnn{len(self.spec.filters)}x{self.spec.filters[-1]}/{pooling}", family=self.name,
                                setting=self.spec, pooling=pooling, oof_float=oof, fold_models=models,
                                seconds=seconds, params=int(models[0].count_params()),
                                size_bytes=int(models[0].count_params()),  # int8 weights, about one byte each
                                device_cost=self.device_cost(), fold_info=infos))
        log.info("CV cnn: macro-F1 mean-pooled %.3f, max-pooled %.3f (%.1f s)",
                 _macro_f1(y, trials[0].oof_float, labels), _macro_f1(y, trials[1].oof_float, labels), seconds)
        return trials

    def fit(self, idx, y, n_labels, setting, seed):
        from convert.cnn import fit_cnn

        model, _ = fit_cnn([self.inputs[i] for i in idx], y[idx], n_labels, setting, seed)
        return model

    def to_tflite(self, model, idx, seed) -> tuple[bytes, object]:
        from convert.quantize import quantize_int8, representative_sample

        x = np.concatenate([self.inputs[i] for i in idx if len(self.inputs[i])])
        return quantize_int8(model, representative_sample(x, seed)), model

    def float_block_scores(self, model, i) -> np.ndarray:
        from convert.quantize import keras_predict

        return keras_predict(model, self.inputs[i])

    def int8_block_scores(self, runner, i) -> np.ndarray:
        return runner.run(self.inputs[i])

    def bundle_parts(self, flat: bytes) -> tuple[dict, list]:
        from runtime.interpreter import Runner

        r = Runner(flat)
        files = {"classifier.tflite": flat}
        stages = [{"file": "classifier.tflite", "role": "classifier", "input": r.input_spec, "output": r.output_spec}]
        return files, stages

    def training_note(self) -> None:
        """Nothing to add to the report: the CNN trains on its blocks as they are."""
        return None

    def params_count(self, model) -> int:
        return int(model.count_params())


class _OverBudget(Exception):
    pass


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
    from runtime.interpreter import Runner

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
    from convert.dataset import load_dataset
    from convert.report import quantization_parity
    from convert.splits import make_splits

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


def thresholds_from_oof(result: dict) -> tuple[dict, dict]:
    """The report's metrics and the per-label F1-optimal thresholds from the out-of-fold scores in ``result``
    (stored into ``result["thresholds"]`` too): the bundle's defaults for listen and evaluate."""
    from convert.report import report_metrics

    computed = report_metrics(result)
    thresholds = {k: round(float(v), 4) for k, v in computed["thresholds"].items()}
    result["thresholds"] = thresholds
    return computed, thresholds


def publish_bundle(out, files: dict, meta: dict, result: dict, force: bool):
    """Write the report beside the model files and publish the bundle atomically; return it loaded."""
    from convert.report import write_report
    from runtime.bundle import load_bundle, write_bundle

    files = dict(files)
    with tempfile.TemporaryDirectory(prefix="fieldear-report-") as tmp:
        write_report(tmp, result)
        for p in sorted(Path(tmp).iterdir()):
            files[p.name] = p.read_bytes()
        write_bundle(out, files, meta, force=force)
    return load_bundle(out)


def _dataset_summary(dataset, alias: tuple[tuple[str, str], ...] = ()) -> dict:
    summary = dataset.summary()
    if not alias:
        return summary

    def fix(v):
        if isinstance(v, str):
            for prefix, repl in alias:
                v = v.replace(prefix, repl)
            return v
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    return fix(summary)


# ---------------------------------------------------------------- the default model

DEFAULT_ESC10_CLASSES = ("chainsaw", "clock_tick", "crackling_fire", "crying_baby", "dog", "helicopter", "rain",
                         "rooster", "sea_waves", "sneezing")
DEFAULT_BIRD_CLASSES = ("great_tit",)


def default_manifest(shared: str | Path, manifest: str | Path, n_folds: int = 5) -> Path:
    """The default training set as a CSV manifest: ESC-10 (official folds from the clip ids) +
    great-tit songs (labels = folder names; folds assigned round-robin over the sorted files)."""
    from convert.dataset import write_manifest
    from runtime.audio import AUDIO_EXTENSIONS
    from runtime.errors import DatasetError

    shared = Path(shared)
    rows = []
    missing = []
    for label in DEFAULT_ESC10_CLASSES:
        folder = shared / "esc10" / label
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in AUDIO_EXTENSIONS) if folder.is_dir() else []
        if not files:
            missing.append(str(folder))
        for p in files:
            clip_id = p.stem.split("_", 1)[-1]  # esc10_<fold>-<source>-<take>
            rows.append((p, label, clip_id.split("-", 1)[0], None))
    for label in DEFAULT_BIRD_CLASSES:
        folder = shared / "birdsong" / label
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in AUDIO_EXTENSIONS) if folder.is_dir() else []
        if not files:
            missing.append(str(folder))
        for k, p in enumerate(files):
            rows.append((p, label, str(k % n_folds + 1), None))
    if missing:
        raise DatasetError(f"the default training data is incomplete: no audio in {', '.join(missing)}",
                           "pass --shared pointing at the project's shared/data folder (esc10/, birdsong/)")
    return write_manifest(rows, manifest)


def train_default(shared: str | Path, options: TrainOptions) -> dict:
    """Build the default training set from ``shared`` and train the default bundle (backbone + head)."""
    shared = Path(shared).resolve()
    with tempfile.TemporaryDirectory(prefix="fieldear-default-") as tmp:
        manifest = default_manifest(shared, Path(tmp) / "default.csv")
        opts = replace(options, data=manifest, name=options.name or "default",
                       path_alias=((str(manifest), "(default set: ESC-10 + great tit)"), (str(shared), "../shared/data")))
        return train(opts)
