"""Score a listen run's logged events against ground-truth annotations.

Event-based metrics, per label, with one-to-one matching (maximum bipartite matching between predicted and
true events of the same label) under two criteria, both reported:

- ``onset``: a prediction matches a true event when their onsets differ by at most ``tolerance`` seconds
  (default 0.5 s);
- ``overlap``: a prediction matches a true event when their intervals overlap at all.

Segment-based metrics: the stream is cut into 1 s segments; a label is active in a segment when any event of
that label overlaps it; TP/FP/FN count segments per label (and summed over labels for the micro average).

False alarms per hour: predictions that overlap no true event of their label (the overlap criterion's false
positives), per hour of audio in the run.

``main(args)`` is what ``fieldear evaluate --db`` calls (args.db, args.annotations, args.tolerance, args.out).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.evaluate.annotations import load_annotations

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.5
SEGMENT_S = 1.0


@dataclass(frozen=True)
class Interval:
    start_s: float
    end_s: float
    label: str


def _prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4)}


def _matches(truth: list, pred: list, criterion: str, tolerance: float) -> int:
    """Size of a maximum one-to-one matching between true and predicted events (one label)."""
    from scipy.optimize import linear_sum_assignment

    if not truth or not pred:
        return 0
    ok = np.zeros((len(truth), len(pred)), dtype=bool)
    cost = np.zeros(ok.shape)
    for i, t in enumerate(truth):
        for j, p in enumerate(pred):
            if criterion == "onset":
                d = abs(p.start_s - t.start_s)
                ok[i, j] = d <= tolerance + 1e-9
            else:
                d = -(min(p.end_s, t.end_s) - max(p.start_s, t.start_s))
                ok[i, j] = d < 0
            cost[i, j] = d
    big = 1e6
    rows, cols = linear_sum_assignment(np.where(ok, cost, big))
    return int(ok[rows, cols].sum())


def event_metrics(truth, pred, labels, criterion: str, tolerance: float) -> dict:
    per = {}
    for label in labels:
        t = [a for a in truth if a.label == label]
        p = [a for a in pred if a.label == label]
        tp = _matches(t, p, criterion, tolerance)
        per[label] = _prf(tp, len(p) - tp, len(t) - tp)
    return per


def _activity(items, label: str, n: int) -> np.ndarray:
    act = np.zeros(n, dtype=bool)
    for a in items:
        if a.label != label or a.end_s <= a.start_s:
            continue
        lo = max(0, int(math.floor(a.start_s / SEGMENT_S)))
        hi = min(n, int(math.ceil(a.end_s / SEGMENT_S)))
        act[lo:hi] = True
    return act


def segment_metrics(truth, pred, labels, duration_s: float) -> dict:
    n = max(1, int(math.ceil(duration_s / SEGMENT_S)))
    per = {}
    for label in labels:
        t, p = _activity(truth, label, n), _activity(pred, label, n)
        per[label] = _prf(int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum()))
    return per


def _micro(per: dict) -> dict:
    return _prf(sum(v["tp"] for v in per.values()), sum(v["fp"] for v in per.values()),
                sum(v["fn"] for v in per.values()))


def evaluate_stream(truth: list, pred: list, duration_s: float, tolerance: float = DEFAULT_TOLERANCE,
                    model_labels: list[str] | None = None) -> dict:
    """All metrics as a JSON-able dict."""
    labels = sorted({a.label for a in truth} | {a.label for a in pred})
    hours = duration_s / 3600.0
    onset = event_metrics(truth, pred, labels, "onset", tolerance)
    overlap = event_metrics(truth, pred, labels, "overlap", tolerance)
    segments = segment_metrics(truth, pred, labels, duration_s)
    per_label = {}
    for label in labels:
        per_label[label] = {
            "n_true": sum(a.label == label for a in truth), "n_pred": sum(a.label == label for a in pred),
            "in_model": (label in model_labels) if model_labels is not None else None,
            "event_onset": onset[label], "event_overlap": overlap[label], "segment": segments[label],
            "false_alarms_per_hour": round(overlap[label]["fp"] / hours, 2) if hours > 0 else None,
        }
    truth_labels = sorted({a.label for a in truth})
    macro = {k: round(float(np.mean([per_label[l][k]["f1"] for l in truth_labels])), 4) if truth_labels else 0.0
             for k in ("event_onset", "event_overlap", "segment")}
    fa = sum(v["fp"] for v in overlap.values())
    return {
        "criteria": {"event_onset": f"|onset difference| <= {tolerance} s, one-to-one",
                     "event_overlap": "intervals overlap, one-to-one",
                     "segment": f"{SEGMENT_S:g} s segments, label active if any event overlaps",
                     "false_alarms": "predictions overlapping no true event of their label"},
        "tolerance_s": tolerance, "duration_s": round(duration_s, 3), "n_true": len(truth), "n_pred": len(pred),
        "per_label": per_label,
        "micro": {"event_onset": _micro(onset), "event_overlap": _micro(overlap), "segment": _micro(segments)},
        "macro_f1": macro,
        "false_alarms": fa, "false_alarms_per_hour": round(fa / hours, 2) if hours > 0 else None,
    }


def format_report(result: dict) -> str:
    lines = [f"{'label':<16} {'true':>4} {'pred':>4}  {'onset P/R/F1':>17}  {'overlap P/R/F1':>17}  "
             f"{'1s-segment P/R/F1':>17}  {'FA/h':>6}"]

    def prf(m):
        return f"{m['precision']:.2f}/{m['recall']:.2f}/{m['f1']:.2f}"

    for label, v in result["per_label"].items():
        fa = v["false_alarms_per_hour"]
        note = "" if v["in_model"] in (None, True) else "  (not a model label)"
        lines.append(f"{label:<16} {v['n_true']:>4} {v['n_pred']:>4}  {prf(v['event_onset']):>17}  "
                     f"{prf(v['event_overlap']):>17}  {prf(v['segment']):>17}  {fa if fa is not None else '-':>6}{note}")
    m = result["micro"]
    lines.append(f"{'(micro)':<16} {result['n_true']:>4} {result['n_pred']:>4}  {prf(m['event_onset']):>17}  "
                 f"{prf(m['event_overlap']):>17}  {prf(m['segment']):>17}  {result['false_alarms_per_hour']:>6}")
    mf = result["macro_f1"]
    lines.append(f"macro F1 over true labels: onset {mf['event_onset']:.3f}, overlap {mf['event_overlap']:.3f}, "
                 f"segment {mf['segment']:.3f}; {result['duration_s'] / 60:.1f} min of audio, "
                 f"onset tolerance {result['tolerance_s']} s")
    return "\n".join(lines)


def load_run(db, run: str | None = None) -> tuple[list[Interval], float, dict]:
    """Events of one listen run (default: the latest), its audio duration and its run record."""
    from runtime.store.queries import find_run, run_events, stream_end_s
    from runtime.store.schema import connect

    conn = connect(db, readonly=True)
    try:
        rec = find_run(conn, run, where=str(db))
        events = [Interval(float(r["start_s"]), float(r["end_s"]), r["label"]) for r in run_events(conn, rec)]
        duration = float(rec.get("audio_s") or 0.0) or stream_end_s(conn)
    finally:
        conn.close()
    return events, duration, rec


def _same_recording(source: str, annotations: Path) -> bool:
    """Does the run's source (``file:NAME.wav``) look like the recording the annotation file is about?
    Names match when one file stem contains the other (``demo.wav`` ~ ``demo_truth.csv``)."""
    if not source.startswith("file:"):
        return True  # a microphone run: nothing to compare
    audio = Path(source[len("file:"):]).stem.lower()
    notes = annotations.name.split(".")[0].lower()
    return audio in notes or notes in audio


def evaluate_run(db, annotations, run: str | int | None = None, tolerance: float | None = None) -> dict:
    """Score one listen run of ``db`` (default: the latest) against an annotation file."""
    truth = load_annotations(annotations)
    pred, duration, rec = load_run(db, run)
    if rec and not _same_recording(str(rec.get("source", "")), Path(annotations)):
        log.warning("run %s listened to %s, but the annotations are %s: is this the right pair?",
                    rec["key"], rec["source"][len("file:"):], Path(annotations).name)
    duration = max(duration, max((a.end_s for a in truth), default=0.0))
    result = evaluate_stream(truth, pred, duration, DEFAULT_TOLERANCE if tolerance is None else float(tolerance),
                             rec.get("labels"))
    result["db"] = str(db)
    result["annotations"] = str(annotations)
    result["run"] = {k: rec.get(k) for k in ("key", "source", "model_sha", "started_utc", "settings_sha")} if rec else None
    return result


def run_line(result: dict) -> str:
    run = result.get("run")
    return f"run {run['key']} ({run.get('source')}, model {str(run.get('model_sha'))[:12]})" if run else "no run record"
