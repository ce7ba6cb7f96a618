"""Classification metrics in plain numpy: used on the device by ``fieldear evaluate`` and in the
training report. Definitions follow scikit-learn's (``zero_division=0``), and the tests check them
against it.

Report dict from :func:`classification_report`::

    {
      "labels": [..],                 # the labels scored, in the order given
      "n": 40,                        # number of clips
      "accuracy": 0.9,                # fraction with y_pred == y_true (an unknown prediction is wrong)
      "per_label": {label: {"precision", "recall", "f1", "support", "predicted"}},
      "macro": {"precision", "recall", "f1"},      # unweighted mean over ``labels``
      "weighted": {"precision", "recall", "f1"},   # mean weighted by support
      "confusion": {"rows": [..labels], "cols": [..labels (+ "unknown")], "matrix": [[int]]},
    }

The confusion matrix has true labels as rows and predicted labels as columns; a predicted label
that is not in ``labels`` is counted in an extra last column ``"unknown"``, present only when such a
prediction occurs. Macro averages include every label in ``labels``, also those without support
(as scikit-learn does): pass only the labels you want averaged.
"""

from __future__ import annotations

import logging

import numpy as np

from runtime.errors import FieldearError

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def confusion_matrix(y_true: list[str], y_pred: list[str], labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Counts (n_labels, n_labels [+1]) and the column names (labels, plus "unknown" if used)."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels in {labels}")
    index = {label: i for i, label in enumerate(labels)}
    stray = sorted({t for t in y_true if t not in index})
    if stray:
        raise FieldearError(
            f"true labels not among the labels scored: {', '.join(map(str, stray))}",
            hint=f"known labels are: {', '.join(labels)}; relabel those clips or leave them out",
        )
    unknown_col = len(labels)
    rows = np.fromiter((index[t] for t in y_true), dtype=np.int64, count=len(y_true))
    cols = np.fromiter((index.get(p, unknown_col) for p in y_pred), dtype=np.int64, count=len(y_pred))
    matrix = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    np.add.at(matrix, (rows, cols), 1)
    names = list(labels)
    if matrix[:, unknown_col].any():
        names.append(UNKNOWN)
    else:
        matrix = matrix[:, :unknown_col]
    return matrix, names


def classification_report(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    """Accuracy, per-label precision/recall/F1/support, macro and weighted averages, confusion matrix."""
    labels = list(labels)
    matrix, cols = confusion_matrix(y_true, y_pred, labels)
    k = len(labels)
    tp = np.diag(matrix[:, :k]).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)  # true count per label (incl. unknown predictions)
    predicted = matrix[:, :k].sum(axis=0).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    n = int(len(y_true))
    total = support.sum()

    def avg(weights: np.ndarray | None) -> dict:
        if k == 0:
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
        if weights is None:
            return {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())}
        if weights.sum() <= 0:
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
        return {
            "precision": float(np.average(precision, weights=weights)),
            "recall": float(np.average(recall, weights=weights)),
            "f1": float(np.average(f1, weights=weights)),
        }

    return {
        "labels": labels,
        "n": n,
        "accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "per_label": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "predicted": int(predicted[i]),
            }
            for i, label in enumerate(labels)
        },
        "macro": avg(None),
        "weighted": avg(support),
        "confusion": {"rows": labels, "cols": cols, "matrix": matrix.tolist()},
    }


def format_report_table(report: dict, title: str | None = None) -> str:
    """Overall accuracy/precision/recall/F1 and a per-label table, as plain text."""
    labels = report["labels"]
    width = max([len("label"), len("macro avg"), len("weighted avg")] + [len(str(x)) for x in labels])
    lines = []
    if title:
        lines.append(title)
    lines.append(f"Overall ({report['n']} clips, {len(labels)} labels)")
    lines.append(f"  {'':<10} {'macro':>8} {'weighted':>9}")
    for key, name in (("recall", "recall"), ("precision", "precision"), ("f1", "F1")):
        lines.append(f"  {name:<10} {report['macro'][key]:>8.3f} {report['weighted'][key]:>9.3f}")
    lines.append(f"  {'accuracy':<10} {report['accuracy']:>8.3f}")
    lines.append("")
    header = f"{'label':<{width}}  {'precision':>9}  {'recall':>6}  {'F1':>6}  {'support':>7}"
    lines.append(header)
    lines.append("-" * len(header))
    for label in labels:
        row = report["per_label"][label]
        lines.append(
            f"{label:<{width}}  {row['precision']:>9.3f}  {row['recall']:>6.3f}  {row['f1']:>6.3f}  {row['support']:>7d}"
        )
    lines.append("-" * len(header))
    total = sum(report["per_label"][x]["support"] for x in labels)
    for name, key in (("macro avg", "macro"), ("weighted avg", "weighted")):
        avg = report[key]
        lines.append(
            f"{name:<{width}}  {avg['precision']:>9.3f}  {avg['recall']:>6.3f}  {avg['f1']:>6.3f}  {total:>7d}"
        )
    return "\n".join(lines)


def _short_names(names: list[str], size: int = 8) -> list[str]:
    """Column headers: labels cut to ``size`` characters, or column numbers if that makes them clash."""
    short = [str(x)[:size] for x in names]
    if len(set(short)) == len(short):
        return short
    return [str(i) for i in range(len(names))]


def confusion_text(report: dict) -> str:
    """The confusion matrix as a text table (rows: true label, columns: predicted label)."""
    conf = report["confusion"]
    rows, cols, matrix = conf["rows"], conf["cols"], conf["matrix"]
    heads = _short_names(cols)
    corner = "true \\ predicted"
    row_w = max([len(corner)] + [len(str(r)) for r in rows])
    biggest = max([1] + [v for line in matrix for v in line])
    cell_w = max([len(str(biggest))] + [len(h) for h in heads])
    lines = [f"{corner:<{row_w}} " + " ".join(f"{h:>{cell_w}}" for h in heads)]
    for name, line in zip(rows, matrix):
        lines.append(f"{name:<{row_w}} " + " ".join(f"{v:>{cell_w}d}" for v in line))
    if heads != [str(c)[:8] for c in cols]:
        lines.append("columns: " + ", ".join(f"{i}={c}" for i, c in enumerate(cols)))
    return "\n".join(lines)


def _binary_inputs(y_true_bin, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true_bin).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true_bin has {y.size} items but scores has {s.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    return y, s


def _counts_by_threshold(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores in ascending order, and true/false positives when predicting score >= each."""
    order = np.argsort(-s, kind="mergesort")
    s_desc, y_desc = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_desc)), s_desc.size - 1]  # last index of each distinct score
    tps = np.cumsum(y_desc)[last]
    fps = (last + 1) - tps
    return s_desc[last][::-1], tps[::-1], fps[::-1]


def precision_recall_curve(y_true_bin, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) like ``sklearn.metrics.precision_recall_curve``.

    ``thresholds`` are the distinct scores in ascending order; ``precision[i]``/``recall[i]`` hold when
    predicting positive for score >= thresholds[i]; a final point (precision 1, recall 0) closes the
    curve. Without positives the recall is 0 everywhere.
    """
    y, s = _binary_inputs(y_true_bin, scores)
    if s.size == 0:
        raise ValueError("precision_recall_curve needs at least one score")
    thresholds, tps, fps = _counts_by_threshold(y, s)
    precision = _safe_div(tps, tps + fps)
    recall = _safe_div(tps, np.full(tps.shape, y.sum()))
    return np.r_[precision, 1.0], np.r_[recall, 0.0], thresholds


def average_precision(y_true_bin, scores) -> float:
    """Area under the precision-recall curve as a step sum (sklearn's average_precision_score)."""
    precision, recall, _ = precision_recall_curve(y_true_bin, scores)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def best_f1_threshold(y_true_bin, scores) -> tuple[float, float]:
    """The threshold with the best F1 when predicting positive for score >= threshold, and that F1.

    The threshold returned is placed half way between the lowest score counted positive and the next
    lower score, so that it separates them with a margin (it selects exactly the same clips). Among
    thresholds with equal F1 the highest wins (fewer false alarms). Without any positive clip the F1
    is 0 and the threshold 0.5 (a neutral default).
    """
    y, s = _binary_inputs(y_true_bin, scores)
    if s.size == 0 or not y.any():
        return 0.5, 0.0
    thresholds, tps, fps = _counts_by_threshold(y, s)
    f1 = _safe_div(2 * tps, tps + fps + y.sum())
    best = np.flatnonzero(f1 == f1.max())[-1]  # ascending thresholds: last = highest
    threshold = thresholds[best] if best == 0 else 0.5 * (thresholds[best] + thresholds[best - 1])
    return float(threshold), float(f1[best])


def label_thresholds(y_true: list[str], scores: np.ndarray, labels: list[str]) -> dict:
    """One-vs-rest PR summary per label from clip scores (n_clips, n_labels).

    Returns ``{label: {"threshold", "f1", "precision", "recall", "average_precision", "positives"}}``
    where threshold/f1 come from :func:`best_f1_threshold` and precision/recall hold at that threshold.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != (len(y_true), len(labels)):
        raise ValueError(f"scores must have shape ({len(y_true)}, {len(labels)}), got {scores.shape}")
    truth = np.asarray(y_true, dtype=object)
    out = {}
    for i, label in enumerate(labels):
        y = truth == label
        s = scores[:, i]
        threshold, f1 = best_f1_threshold(y, s)
        hit = s >= threshold
        tp = int(np.sum(hit & y))
        out[label] = {
            "threshold": threshold,
            "f1": f1,
            "precision": float(tp / hit.sum()) if hit.sum() else 0.0,
            "recall": float(tp / y.sum()) if y.sum() else 0.0,
            "average_precision": average_precision(y, s) if y.any() else 0.0,
            "positives": int(y.sum()),
        }
    return out


