"""What every training family provides (the ``Family`` protocol), and what they share: CV trials, pooling, the time budget."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

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


def pool_scores(block_scores: np.ndarray, pooling: str, n_labels: int) -> np.ndarray:
    """Clip score from block scores, exactly as runtime.model.Model.pool does."""
    if len(block_scores) == 0:
        return np.zeros(n_labels, dtype=np.float32)
    return block_scores.max(axis=0) if pooling == "max" else block_scores.mean(axis=0)


def _scores_report(y_true: np.ndarray, scores: np.ndarray, labels: list[str]) -> dict:
    from runtime.evaluate.metrics import classification_report

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


class _OverBudget(Exception):
    pass
