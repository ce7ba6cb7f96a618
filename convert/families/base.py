"""What every training family provides (the ``Family`` protocol), and what they share: CV trials, clip
scores, the time budget."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from runtime.model.bundle import POOLINGS
from runtime.model.model import pool_scores

log = logging.getLogger(__name__)


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


class OverBudget(Exception):
    """A candidate stopped because the rest of its cross-validation would not fit the time budget."""


@runtime_checkable
class Family(Protocol):
    """A kind of model ``train`` can build: it turns the dataset into its own inputs, cross-validates its
    settings, fits the chosen one, and hands back int8 TFLite stages for the bundle."""

    name: str
    params: object  # runtime.features.frontend.FrontendParams: the log-mel its blocks are made with
    parity_reference: str  # what "float" means in the int8 parity report

    def estimate_seconds(self, dataset, n_folds: int) -> float:
        """Rough cross-validation time, to skip a candidate that cannot fit the budget."""

    def prepare(self, dataset) -> None:
        """Compute (or load from the cache) this family's per-clip inputs."""

    def cross_validate(self, y, splits, n_labels: int, seed: int, budget: Budget | None, labels) -> list[Trial]:
        """One Trial per setting and pooling; raises OverBudget when ``budget`` runs out."""

    def fit(self, idx, y, n_labels: int, setting, seed: int):
        """The model of ``setting`` trained on clips ``idx``."""

    def to_tflite(self, model, idx, seed: int) -> tuple[bytes, object]:
        """(int8 flatbuffer, float Keras model), calibrated on the blocks of clips ``idx``."""

    def int8_block_scores(self, runner, i: int) -> np.ndarray:
        """Block scores of clip ``i`` from the quantized model (a runtime Runner)."""

    def bundle_parts(self, flat: bytes) -> tuple[dict, list]:
        """(files, stages) for the bundle, the trained flatbuffer in its place."""

    def training_note(self) -> str | None:
        """How the training blocks were made, for the report (None: nothing to add)."""

    def params_count(self, model) -> int:
        """Parameters of the whole device model (backbone included)."""


def scores_report(y_true: np.ndarray, scores: np.ndarray, labels: list[str]) -> dict:
    """The classification report of the top-scoring label of each clip."""
    from runtime.evaluate.metrics import classification_report

    pred = [labels[i] for i in scores.argmax(axis=1)]
    return classification_report([labels[i] for i in y_true], pred, labels)


def macro_f1(y_true, scores, labels) -> float:
    return scores_report(y_true, scores, labels)["macro"]["f1"]


def estimated_blocks(dataset, params) -> float:
    """How many blocks the dataset's clips make with ``params`` (at least one per clip)."""
    return sum(max(1.0, c.duration_s / params.block_hop_seconds) for c in dataset.items)


def calibration_blocks(inputs: list[np.ndarray], idx) -> np.ndarray:
    """All the blocks of clips ``idx``: the representative data for int8 calibration."""
    return np.concatenate([inputs[i] for i in idx if len(inputs[i])])


def stage_entry(file: str, role: str, runner) -> dict:
    """A bundle stage for a TFLite file, its tensor specs read from the file itself."""
    return {"file": file, "role": role, "input": runner.input_spec, "output": runner.output_spec}


def pooled_trials(block_scores: list[np.ndarray], name: str, n_labels: int, **trial) -> list[Trial]:
    """One Trial per clip pooling from the out-of-fold block scores of one setting."""
    return [Trial(name=f"{name}/{pooling}", pooling=pooling,
                  oof_float=np.stack([pool_scores(b, pooling, n_labels) for b in block_scores]), **trial)
            for pooling in POOLINGS]


def log_fold(name: str, k: int, n_folds: int) -> None:
    """The progress line of one CV fold starting (the studio's train page shows it)."""
    log.info("CV %s: fold %d/%d", name, k + 1, n_folds)


def log_trials(name: str, trials: list[Trial], y, labels, seconds: float) -> None:
    scores = ", ".join(f"{t.pooling}-pooled {macro_f1(y, t.oof_float, labels):.3f}" for t in trials)
    log.info("CV %s: macro-F1 %s (%.1f s)", name, scores, seconds)
