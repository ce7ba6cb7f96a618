"""Plots for reports (matplotlib, imported on first use): confusion matrix and precision-recall curves."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from runtime.evaluate.metrics import average_precision, precision_recall_curve

log = logging.getLogger(__name__)


def _figure_class():
    """matplotlib's Figure (renders to files without pyplot or a GUI backend), or None when missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed: no plots written (pip install matplotlib)")
        return None
    return Figure


def save_confusion_png(report: dict, path: str | Path) -> bool:
    """Draw the confusion matrix to a PNG. False (and a log line) if matplotlib is unavailable."""
    figure = _figure_class()
    if figure is None:
        return False
    conf = report["confusion"]
    matrix = np.asarray(conf["matrix"], dtype=np.int64)
    rows, cols = conf["rows"], conf["cols"]
    size = 2.5 + 0.55 * max(len(rows), len(cols))
    fig = figure(figsize=(size, size * 0.9))
    ax = fig.subplots()
    top = int(matrix.max()) if matrix.size else 0
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, top))
    ax.set_xticks(range(len(cols)), labels=cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), labels=rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (r, c), v in np.ndenumerate(matrix):
        if v:
            ax.text(c, r, str(v), ha="center", va="center", color="white" if v > top / 2 else "black", fontsize=8)
    ax.set_title(f"accuracy {report['accuracy']:.3f}, macro F1 {report['macro']['f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def save_pr_png(y_true: list[str], scores: np.ndarray, labels: list[str], path: str | Path) -> bool:
    """One-vs-rest precision-recall curves per label in one PNG. False if matplotlib is unavailable."""
    figure = _figure_class()
    if figure is None:
        return False
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(y_true, dtype=object)
    fig = figure(figsize=(6.5, 5))
    ax = fig.subplots()
    for i, label in enumerate(labels):
        y = truth == label
        if not y.any():
            continue
        precision, recall, _ = precision_recall_curve(y, scores[:, i])
        ap = average_precision(y, scores[:, i])
        ax.step(recall, precision, where="post", label=f"{label} (AP {ap:.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("precision-recall per label (one vs rest)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True
