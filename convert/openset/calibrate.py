"""Listen's defaults, chosen on the validation streams: per-label thresholds, smoothing, minimum event
duration, merge gap and the out-of-distribution cut, maximising macro event F1 with at most
``max_false_alarms`` per hour.

Events come from the device's own detector (runtime.detect.events) and are scored with the device's
evaluation rules (runtime.evaluate.stream_eval: overlap criterion, one-to-one). A label's events depend only
on its own scores, so each label's threshold is searched alone for every shared setting (one detector run per
label, threshold and smoothing; merge gaps and minimum durations applied to its events); thresholds are then
raised, cheapest F1 loss per false alarm first, until the false alarms fit the budget. Ties go to the simpler
setting (no smoothing, no minimum, no merging, no novelty cut), listed first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from runtime.detect.events import MovingAverage, PostSettings, detect, segment_of
from runtime.evaluate.stream_eval import Interval, event_metrics

log = logging.getLogger(__name__)

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
SMOOTHING = (1, 2, 3)
MIN_EVENT_HOPS = (0, 2)  # minimum event duration, in block hops
MERGE_GAP_HOPS = (0, 1)  # merge gap, in block hops
NOVELTY_QUANTILES = (None, 0.02, 0.05, 0.1)  # tau = this quantile of held-out targets' similarity to their label
HYSTERESIS = PostSettings().hysteresis
PLATEAU = 0.02  # event F1 within this of a label's best counts as equally good
REVIEW_RECALL_LOSS = 0.05  # train --update --reviews: share of a label's confirmed reviews it may lose (issue 13)


@dataclass
class Timeline:
    """All folds' validation streams end to end: what the search listens to."""

    raw: np.ndarray  # (n, n_labels) int8 head scores
    sims: np.ndarray  # (n, n_labels) similarity to each label's prototypes (the fold's own)
    truth: list[Interval]  # targets
    distractors: list[Interval]  # label = the distractor's category
    hop_s: float
    block_s: float

    @property
    def duration_s(self) -> float:
        return len(self.raw) * self.hop_s + (self.block_s - self.hop_s)

    def times(self, k: int) -> tuple[float, float]:
        return k * self.hop_s, k * self.hop_s + self.block_s

    def interval(self, first: int, last: int, label: str) -> Interval:
        """The stream time of blocks [first, last) as the detector attributes them."""
        a, _ = segment_of(*self.times(first), self.hop_s)
        _, b = segment_of(*self.times(last - 1), self.hop_s)
        return Interval(a, b, label)


def build_timeline(streams, raw_scores, sims, hop_s: float, block_s: float) -> Timeline:
    """``streams``: ValidationStream per fold; ``raw_scores``/``sims``: their (n, n_labels) arrays."""
    tl = Timeline(np.concatenate(raw_scores), np.concatenate(sims), [], [], hop_s, block_s)
    offset = 0
    for stream in streams:
        for item in stream.items:
            if item.kind == "target":
                tl.truth.append(tl.interval(offset + item.loud[0], offset + item.loud[1], item.label))
            else:
                tl.distractors.append(tl.interval(offset + item.first, offset + item.first + item.n, item.label))
        offset += stream.n_blocks
    return tl


def smoothed(tl: Timeline, scores: np.ndarray, n: int) -> list[tuple[tuple[float, float], np.ndarray]]:
    """(segment, scores) per block after the device's moving average over ``n`` blocks."""
    ma, out = MovingAverage(n), []
    for k in range(len(scores)):
        out.extend(ma.push(segment_of(*tl.times(k), tl.hop_s), scores[k]))
    return out + ma.flush()


def label_events(label: str, seq: list, settings: PostSettings, hop_s: float) -> list:
    """One label's events from its smoothed (segment, score) sequence. Only the blocks at or above the off
    threshold and the block after each run of them can change the outcome, so only those are fed."""
    off = settings.off_threshold(label)
    fed, prev = [], False
    for (a, b), v in seq:
        on = float(v[0]) >= off
        if on or prev:
            fed.append((a, b, v))
        prev = on
    # the sequence is already smoothed: the detector's own moving average is one block wide
    return detect([label], settings, hop_s, fed)


def merged(events: list, merge_gap_s: float, min_event_s: float) -> list[tuple[float, float]]:
    """(start, end) of one label's events found with no merge gap and no minimum, as the detector would report
    them with ``merge_gap_s`` and ``min_event_s``: an event starting within the gap of the previous one's end
    continues it, then the short ones are dropped (so one detector run serves every gap and minimum)."""
    out: list[list[float]] = []
    for e in sorted(events, key=lambda e: e.start_s):
        if out and e.start_s - out[-1][1] <= merge_gap_s + 1e-9:
            out[-1][1] = max(out[-1][1], e.end_s)
        else:
            out.append([e.start_s, e.end_s])
    return [(a, b) for a, b in out if b - a + 1e-9 >= min_event_s]


def counts(truth: list, events: list, label: str) -> tuple[int, int, int]:
    pred = [Interval(a, b, label) for a, b in events]
    m = event_metrics(truth, pred, [label], "overlap", 0.0)[label]
    return m["tp"], m["fp"], m["fn"]


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def most_sensitive_best(table: list[tuple[int, int, int]]) -> int:
    """The lowest threshold whose F1 is within PLATEAU of the label's best: validation streams are kinder than the
    field (their backgrounds were heard in training), so of equally good thresholds the most sensitive is kept."""
    best = max(f1(*t) for t in table)
    return next(j for j, t in enumerate(table) if f1(*t) >= best - PLATEAU)


def fit_budget(tables: list[list[tuple[int, int, int]]], budget_fp: float) -> tuple[list[int], bool]:
    """Per label, the index of a threshold: the most sensitive of the best (``most_sensitive_best``), then raised
    (smallest F1 loss per false alarm removed first) until the summed false alarms fit ``budget_fp``.
    (choice, whether it fits)."""
    pick = [most_sensitive_best(t) for t in tables]
    while sum(tables[i][j][1] for i, j in enumerate(pick)) > budget_fp:
        best = None
        for i, j in enumerate(pick):
            for j2 in range(j + 1, len(tables[i])):
                gain = tables[i][j][1] - tables[i][j2][1]
                if gain > 0:
                    cost = (f1(*tables[i][j]) - f1(*tables[i][j2])) / gain
                    if best is None or cost < best[0]:
                        best = (cost, i, j2)
                    break
        if best is None:
            return pick, False
        pick[best[1]] = best[2]
    return pick, True


def choose(tl: Timeline, labels: list[str], taus: dict, max_false_alarms: float) -> dict:
    """The detection settings (and novelty quantile) with the best macro event F1 under the false-alarm budget."""
    hours = tl.duration_s / 3600.0
    budget_fp = max_false_alarms * hours
    best = None
    for q in NOVELTY_QUANTILES:
        if q is not None and q not in taus:
            continue
        tau = taus.get(q)
        scores = tl.raw if tau is None else np.where(tl.sims >= tau, tl.raw, 0.0)
        for smoothing in SMOOTHING:
            seqs = [smoothed(tl, scores[:, [i]], smoothing) for i in range(len(labels))]
            found = [[label_events(label, seqs[i], PostSettings(thresholds={label: thr}, hysteresis=HYSTERESIS),
                                   tl.hop_s) for thr in THRESHOLDS] for i, label in enumerate(labels)]
            truths = [[t for t in tl.truth if t.label == label] for label in labels]
            for min_hops in MIN_EVENT_HOPS:
                for gap_hops in MERGE_GAP_HOPS:
                    min_s, gap_s = round(min_hops * tl.hop_s, 3), round(gap_hops * tl.hop_s, 3)
                    tables = [[counts(truths[i], merged(ev, gap_s, min_s), label) for ev in found[i]]
                              for i, label in enumerate(labels)]
                    pick, fits = fit_budget(tables, budget_fp)
                    macro = float(np.mean([f1(*tables[i][j]) for i, j in enumerate(pick)]))
                    fp = sum(tables[i][j][1] for i, j in enumerate(pick))
                    key = (fits, round(macro, 3) if fits else -fp, round(macro, 3))
                    if best is None or key > best["key"]:
                        best = {"key": key, "novelty_quantile": q, "smoothing": smoothing, "fits": fits,
                                "min_event_s": min_s, "merge_gap_s": gap_s,
                                "thresholds": {label: THRESHOLDS[j] for label, j in zip(labels, pick)}}
    best.pop("key")
    return best


def validate(tl: Timeline, labels: list[str], choice: dict, tau) -> dict:
    """Event metrics of the chosen settings on the validation streams (all labels at once, as listen runs)."""
    from runtime.evaluate.stream_eval import evaluate_stream

    scores = tl.raw if tau is None else np.where(tl.sims >= tau, tl.raw, 0.0)
    settings = PostSettings(thresholds=choice["thresholds"], smoothing=choice["smoothing"], hysteresis=HYSTERESIS,
                            min_event_s=choice["min_event_s"], merge_gap_s=choice["merge_gap_s"])
    events = detect(labels, settings, tl.hop_s, [(*tl.times(k), scores[k]) for k in range(len(scores))])
    pred = [Interval(e.start_s, e.end_s, e.label) for e in events]
    result = evaluate_stream(tl.truth, pred, tl.duration_s, model_labels=labels)
    hit = [d for d in tl.distractors if any(p.start_s < d.end_s and d.start_s < p.end_s for p in pred)]
    kinds = sorted({d.label for d in tl.distractors})
    return {
        "duration_s": round(tl.duration_s, 1), "n_targets": len(tl.truth), "n_distractors": len(tl.distractors),
        "n_events": len(pred),
        "per_label": {label: result["per_label"].get(label, {}).get("event_overlap",
                                                                    {"precision": 0.0, "recall": 0.0, "f1": 0.0})
                      for label in labels},
        "macro_event_f1": result["macro_f1"]["event_overlap"],
        "false_alarms_per_hour": result["false_alarms_per_hour"],
        "distractor_hit_rate": round(len(hit) / max(1, len(tl.distractors)), 3),
        "distractors_hit_by_kind": {k: [sum(d.label == k for d in hit), sum(d.label == k for d in tl.distractors)]
                                    for k in kinds},
    }


def keep_review_recall(thresholds: dict, old: dict, labels: list[str],
                       peaks: list[tuple[int, float]]) -> tuple[dict, dict]:
    """After ``train --update --reviews``: a label's threshold goes above the old bundle's (``old``) only as far
    as its confirmed reviewed clips show that costs at most REVIEW_RECALL_LOSS of its true detections; else the
    streams' choice is lowered down THRESHOLDS to that point (at the lowest, to the old threshold).

    ``peaks``: (label index, out-of-fold peak score) of each confirmed clip; every one was a detection in the
    field. With k of a label's n confirmed clips below t, a new true event falls below t with probability at
    most (k + 1) / (n + 1) (order statistics), so a raise needs (k + 1) / (n + 1) <= REVIEW_RECALL_LOSS: at
    least 19 confirmed clips of the label, none lost. Why: the validation streams play every rejected clip
    against a false-alarm budget of a few synthetic minutes, and with few reviews that pushed thresholds past
    the field's own true detections (ESC-10 loop, docs/web.md: dog 0.6 -> 0.85 on 5 confirmed dogs, 2 of 16
    dogs lost on the second half). (thresholds, per label: from_streams, old, threshold, n, loss bound.)"""
    out, notes = dict(thresholds), {}
    for k, label in enumerate(labels):
        pos = np.array([p for y, p in peaks if y == k])
        t0 = float(thresholds[label])
        t_old = float(old.get(label, t0))

        def bound(t: float) -> float:
            return (int((pos < t).sum()) + 1) / (len(pos) + 1)

        t = t0
        while t > t_old and bound(t) > REVIEW_RECALL_LOSS + 1e-9:
            lower = [g for g in THRESHOLDS if t_old <= g < t]
            t = max(lower) if lower else t_old
        out[label] = t
        notes[label] = {"from_streams": t0, "old": t_old, "threshold": t, "confirmed_reviews": int(len(pos)),
                        "loss_bound_at_streams": round(bound(t0), 3)}
    return out, notes
