"""``fieldear train --update BUNDLE --reviews DB``: the field's corrections as training data.

The device log (``runtime.store``) holds events, their saved clips and people's reviews of them; the latest
review of an event is its verdict (``runtime.store.queries.reviewed_clips``, the one reader of the log):

- confirm: the clip is a positive of the event's label;
- relabel to a label: a positive of that label; relabel to "background" and reject: a negative (a hard
  negative: something the model took for a label), added to the negative pool as an "event" item of category
  ``review:rejected``, in the CV fold given by a stable hash of its sha256. A reject says "not this label": the
  clip's blocks that sound like another label are left out (convert.openset.pool.build_pool); a relabel to
  background trains every block.

A verdict naming a label the bundle does not have (a relabel to a new label, or a confirmed event of a model
with other labels) is skipped with a warning and counted in the report: the head's labels are fixed by the
bundle (adding a label is a new training run), and one such review must not make a whole log unusable.
Reviews whose clip was never saved or is gone (quota) are counted and warned about, never fatal.

A stable 30 % of the reviewed clips (by a hash of the clip's sha256) is held out of training and scored by the
old and the new bundle: the report's "held-out reviews" comparison.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.errors import FieldearError

log = logging.getLogger(__name__)

HOLDOUT_SHARE = 0.30
REVIEW_HOP_DIVISOR = 5  # reviewed clips are embedded every 1/5 of the device's block hop (embed_reviews)
REVIEW_CATEGORY = "review:rejected"
BACKGROUND = "background"


@dataclass
class ReviewClip:
    path: Path
    sha: str  # sha256 of the clip file
    verdict: str  # confirm | reject | relabel
    label: str  # what the clip is: a label or "background"
    event_label: str  # what the model said
    db: str
    event_id: int
    span_s: tuple[float, float] | None = None  # the event's own span in the clip's seconds (event_span)

    @property
    def negative(self) -> bool:
        return self.label == BACKGROUND


@dataclass
class ReviewSet:
    train: list[ReviewClip] = field(default_factory=list)  # positives and negatives to train on
    held_out: list[ReviewClip] = field(default_factory=list)
    notes: dict = field(default_factory=dict)  # counts for the report

    @property
    def positives(self) -> list[ReviewClip]:
        return [c for c in self.train if not c.negative]

    @property
    def negatives(self) -> list[ReviewClip]:
        return [c for c in self.train if c.negative]

    @property
    def shas(self) -> set[str]:
        return {c.sha for c in self.train + self.held_out}


def is_held_out(sha: str) -> bool:
    """A stable HOLDOUT_SHARE of clips, by their sha256."""
    return int(hashlib.sha256(f"held-out:{sha}".encode()).hexdigest()[:8], 16) % 1000 < 1000 * HOLDOUT_SHARE


def _db_rows(db: Path) -> list[dict]:
    from runtime.store.queries import reviewed_clips
    from runtime.store.schema import connect

    if not db.is_file():
        raise FieldearError(f"--reviews {db}: no such log database", "give the device log, e.g. "
                            "/var/lib/fieldear/fieldear.db (copied from the device with its clips/ folder)")
    try:
        conn = connect(db, readonly=True)
        try:
            rows = reviewed_clips(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise FieldearError(f"--reviews {db}: cannot read the log ({exc})", "give a fieldear log database") from None
    if not rows:
        raise FieldearError(f"--reviews {db}: the log has no reviewed events",
                            "review detections first (`fieldear serve` or `fieldear review EVENT_ID confirm|reject`)")
    return rows


def read_reviews(dbs, labels: list[str]) -> ReviewSet:
    """The reviewed clips of the logs ``dbs`` (latest verdict per clip; a clip in several logs: the last log's)."""
    from runtime.model.bundle import sha256_file

    known = set(labels)
    by_sha: dict[str, ReviewClip] = {}
    actions: Counter = Counter()
    by_action_label: dict[str, Counter] = {}
    missing, unknown, n_rows = 0, Counter(), 0
    for db in dbs:
        db = Path(db)
        for row in _db_rows(db):
            n_rows += 1
            verdict, label = row["verdict"], row["label"] or row["event_label"]
            path = (db.parent / row["clip_path"]) if row["clip_path"] else None
            if path is None or not path.is_file():
                missing += 1
                continue
            if label != BACKGROUND and label not in known:
                unknown[label] += 1
                continue
            clip = ReviewClip(path=path, sha=sha256_file(path), verdict=verdict, label=label,
                              event_label=row["event_label"], db=str(db), event_id=int(row["event_id"]),
                              span_s=event_span(row, path))
            by_sha[clip.sha] = clip
    clips = list(by_sha.values())
    for c in clips:
        actions[c.verdict] += 1
        by_action_label.setdefault(c.verdict, Counter())[c.label] += 1
    if missing:
        log.warning("--reviews: %d reviewed event(s) without a saved clip (never saved or deleted by the quota) "
                    "left out", missing)
    if unknown:
        log.warning("--reviews: reviews naming labels the bundle does not have left out: %s (a new label needs "
                    "`fieldear train` with clips of it)", ", ".join(f"{k} ({n})" for k, n in sorted(unknown.items())))
    if not clips:
        raise FieldearError(f"--reviews: none of the {n_rows} reviewed event(s) can be used ({missing} without a "
                            f"clip, {sum(unknown.values())} of labels the bundle does not have)",
                            "keep clips with `listen --clips` and review detections of the bundle's labels")
    out = ReviewSet()
    for c in clips:
        (out.held_out if is_held_out(c.sha) else out.train).append(c)
    out.notes = {
        "logs": [str(d) for d in dbs], "reviewed_events": n_rows, "clips": len(clips),
        "by_action": dict(sorted(actions.items())),
        "by_action_label": {a: dict(sorted(c.items())) for a, c in sorted(by_action_label.items())},
        "missing_clips": missing, "skipped_unknown_label": dict(sorted(unknown.items())),
        "held_out": len(out.held_out), "held_out_share": HOLDOUT_SHARE,
        "trained": {"positives": dict(sorted(Counter(c.label for c in out.positives).items())),
                    "negatives": len(out.negatives)},
    }
    log.info("--reviews: %d clip(s) (%s); %d held out; training on %d positive(s) and %d negative(s)", len(clips),
             ", ".join(f"{k} {v}" for k, v in sorted(actions.items())), len(out.held_out), len(out.positives),
             len(out.negatives))
    return out


def event_span(row: dict, path: Path) -> tuple[float, float] | None:
    """Where the event (``row``: reviewed_clips' start_s, end_s, clip_start_s) lies in its saved clip, in the
    clip's seconds. The clip's start is the log's fact (schema 4); a clip of an older log is taken to have as
    much audio before the event as after it (ClipRecorder's pre_s = post_s, the default), no earlier than the
    stream's start. None when the clip cannot be read."""
    from runtime.audio.files import probe
    from runtime.errors import AudioError

    start, end = float(row["start_s"]), float(row["end_s"])
    clip_start = row.get("clip_start_s")
    if clip_start is None:
        try:
            duration = probe(path).duration_s
        except (OSError, AudioError):
            return None
        clip_start = max(0.0, start - max(0.0, duration - (end - start)) / 2)
    return start - float(clip_start), end - float(clip_start)


def span_blocks(dense: np.ndarray, span_s: tuple[float, float] | None, family) -> np.ndarray:
    """Indices of ``embed_reviews``' blocks of one clip that are the event's own blocks: at the device's block
    hop, from the first block lying inside the event's span (``event_span``, within half a dense hop) while
    they lie inside it; the blocks partly in the clip's pre- and post-roll are left out. The device's own blocks
    of the event, to within half a dense hop. Without a span (or no block inside it, a clip cut short): the
    device-hop blocks from the clip's start."""
    dense_hop = dense_params(family.params)
    step = max(1, family.params.block_hop // dense_hop.block_hop)
    every = np.arange(0, len(dense), step)
    if span_s is None:
        return every
    hop_s = dense_hop.block_hop_seconds
    starts = np.arange(len(dense)) * hop_s
    inside = (starts >= span_s[0] - hop_s / 2) & (starts + family.params.block_seconds <= span_s[1] + hop_s / 2)
    if not inside.any():
        return every
    first = int(np.argmax(inside))
    idx = np.arange(first, len(dense), step)
    return idx[inside[idx]]


def embed_reviews(clips: list[ReviewClip], family) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(block embeddings, block levels) per clip, by the family's backbone (cached like training clips), blocks
    every 1/REVIEW_HOP_DIVISOR of the device's hop: a saved clip starts ``pre_s`` before its event at no block
    boundary of the device, so blocks at the device's own hop miss the block that fired (measured on ESC-10
    stream A: a rejected dog event of score 0.75 scored 0.04 on its clip's one block, a rooster of 0.82 scored
    0.48); the denser blocks hold one within a fifth of a hop of it. Every REVIEW_HOP_DIVISOR-th of them are the
    blocks at the device's hop (``span_blocks`` without a span)."""
    from convert.families.embed import dataset_embeddings

    if not clips:
        return [], []
    return dataset_embeddings(clips, family.backbone_path, dense_params(family.params),
                              cache_dir=family.options.cache_dir, threads=family.options.threads, with_levels=True)


def dense_params(params):
    """The frontend parameters with blocks every 1/REVIEW_HOP_DIVISOR of ``params``' hop."""
    return params.with_block_hop(max(1, params.block_hop // REVIEW_HOP_DIVISOR))


def score_held_out(bundle_path, clips: list[ReviewClip]) -> dict:
    """Held-out reviewed clips scored by one bundle (gated block scores, the bundle's stream thresholds): a
    positive is detected when its label's max block score reaches the label's stream threshold; a negative is a
    false alarm when any label's does. Blocks every 1/REVIEW_HOP_DIVISOR of the device's hop, as
    ``embed_reviews`` makes them (the clip's own blocks at the device's hop miss the block that fired)."""
    from runtime.features.pipeline import FileBlocks
    from runtime.model.bundle import load_bundle
    from runtime.model.model import Model

    bundle = load_bundle(bundle_path)
    model = Model(bundle)
    dense = dense_params(model.params)
    thresholds = (bundle.stream or {}).get("thresholds") or dict(bundle.thresholds)
    th = np.array([float(thresholds.get(label, 0.5)) for label in model.labels])
    pos_hit, pos_n, neg_hit, neg_n = Counter(), Counter(), 0, 0
    for c in clips:
        scores = [model.score_block(block.features) for block in FileBlocks(c.path, dense)]
        top = np.max(scores, axis=0) if scores else np.zeros(len(model.labels))
        if c.negative:
            neg_n += 1
            neg_hit += int((top >= th).any())
        else:
            k = model.labels.index(c.label)
            pos_n[c.label] += 1
            pos_hit[c.label] += int(top[k] >= th[k])
    n_pos = sum(pos_n.values())
    return {"positives": n_pos, "detected": sum(pos_hit.values()),
            "recall": round(sum(pos_hit.values()) / n_pos, 4) if n_pos else None,
            "per_label": {k: [pos_hit[k], pos_n[k]] for k in sorted(pos_n)},
            "negatives": neg_n, "false_alarms": neg_hit,
            "false_alarm_rate": round(neg_hit / neg_n, 4) if neg_n else None}
