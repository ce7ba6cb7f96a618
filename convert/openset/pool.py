"""The negative blocks of a training run: the built-in negative set, the user's ``--background`` recordings
and nothing that sounds like the user's own labels.

Every negative block belongs to one cross-validation fold (a whole built-in item, or a ~30 s segment of a
background recording, stays in one fold): fold k's head never trains on fold k's negatives, which are kept
for fold k's validation stream. Two kinds: *beds* (continuous ambient audio: the background of validation
streams) and *events* (short non-target sounds: the distractors).

A negative too similar to a label is dropped: a block whose cosine similarity to the label's nearest
training block reaches the LIKE_QUANTILE quantile of the similarities of that label's blocks to their
nearest block from another clip of the label (the rule adapts to how tight each label is); a built-in
event item with any such block is dropped whole, and so is an exact copy (same sha256) of a training clip.
Measured on the built-in set with 16 ESC-10 clips per label as the user's: the quartile drops 11 of 16
other dogs (the median: 6) and keeps every speech item; the 10 % quantile drops every dog but also most
crying babies and sneezes.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from runtime.errors import FieldearError
from runtime.model.novelty import unit_rows

log = logging.getLogger(__name__)

LIKE_QUANTILE = 0.25
SEGMENT_BLOCKS = 26  # a background recording is cut into ~30 s segments (1.16 s hop), each in one fold


@dataclass
class NegativePool:
    emb: np.ndarray  # (n, dim) float32
    fold: np.ndarray  # (n,) CV fold index of each block
    item: np.ndarray  # (n,) item id (an event, a bed or a background segment); blocks of an item are in order
    kind: np.ndarray  # (n,) "bed" | "event"
    category: np.ndarray  # (n,) e.g. "ambient", "speech", "background:<file>", an ESC-10 class
    notes: dict  # what was kept and dropped, for the report

    def __len__(self) -> int:
        return int(len(self.emb))

    def training(self, fold: int | None) -> np.ndarray:
        """Embeddings a head may train on: all, or those outside validation fold ``fold``."""
        return self.emb if fold is None else self.emb[self.fold != fold]

    def hard(self, fold: int | None) -> np.ndarray:
        """Which of ``training(fold)`` are hard negatives (reviewed clips people rejected: ``review:`` categories)."""
        cat = self.category if fold is None else self.category[self.fold != fold]
        return np.char.startswith(cat.astype(str), "review:")

    def items(self, fold: int, kind: str) -> list[np.ndarray]:
        """The block embeddings of each item of ``kind`` in validation fold ``fold``, in order."""
        mask = (self.fold == fold) & (self.kind == kind)
        return [self.emb[mask & (self.item == i)] for i in np.unique(self.item[mask])]

    def item_categories(self, fold: int, kind: str) -> list[str]:
        mask = (self.fold == fold) & (self.kind == kind)
        return [str(self.category[mask & (self.item == i)][0]) for i in np.unique(self.item[mask])]


def stable_fold(key: str, n_folds: int) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % n_folds


def label_similarity_floor(pos: list[np.ndarray], pos_label: np.ndarray, n_labels: int) -> np.ndarray:
    """Per label: the LIKE_QUANTILE quantile of the similarities of its (loud) blocks to their nearest block from
    another clip of the label (``pos``: unit block embeddings per clip). A label with one clip gets 1 (nothing is
    dropped for it)."""
    floors = np.ones(n_labels, dtype=np.float32)
    for k in range(n_labels):
        clips = [p for p, lab in zip(pos, pos_label) if lab == k and len(p)]
        if len(clips) < 2:
            continue
        nearest = []
        for j, c in enumerate(clips):
            others = np.concatenate([o for i, o in enumerate(clips) if i != j])
            nearest.append((c @ others.T).max(axis=1))
        floors[k] = float(np.quantile(np.concatenate(nearest), LIKE_QUANTILE))
    return floors


def label_like(emb: np.ndarray, pos: list[np.ndarray], pos_label: np.ndarray, floors: np.ndarray) -> np.ndarray:
    """(n,) index of the label each block sounds like (similarity >= that label's floor), -1 for none."""
    out = np.full(len(emb), -1, dtype=np.int64)
    if not len(emb):
        return out
    u = unit_rows(emb)
    best = np.full(len(emb), -np.inf)
    for k in range(len(floors)):
        blocks = [p for p, lab in zip(pos, pos_label) if lab == k and len(p)]
        if not blocks:
            continue
        sim = (u @ np.concatenate(blocks).T).max(axis=1)
        hit = (sim >= floors[k]) & (sim - floors[k] > best)
        out[hit], best[hit] = k, (sim - floors[k])[hit]
    return out


def build_pool(builtin, background: list, positives: list[np.ndarray], pos_label: np.ndarray, pos_sha: set[str],
               labels: list[str], n_folds: int, events: list | None = None, beds: list | None = None) -> NegativePool:
    """The run's negatives. ``builtin``: a convert.data.negatives.NegativeSet (or None); ``background``: the
    user's recordings (convert.data.background.BackgroundFile); ``positives``: loud block embeddings per training
    clip with their label indices and the clips' sha256; ``events``: hard negatives (``emb``, ``sha``,
    ``category``, optional ``not_label``: reviewed clips a person rejected, and the label the model said), each an
    "event" item in the fold of its sha, never dropped as like the label they were taken for (that is why they
    are there); of a rejected event (``not_label`` set), blocks like another label are left out. ``beds``: the
    committed bed recordings embedded by a family without a built-in set of its own (BackgroundFile), each a
    "bed" item, dealt to the folds in turn (there are few: every fold's validation stream needs one), label-like
    blocks dropped."""
    pos = [unit_rows(p) for p in positives]
    floors = label_similarity_floor(pos, pos_label, len(labels))
    parts, notes = [], {"builtin_items": 0, "builtin_dropped": {}, "background_files": [], "similarity_floor":
                        {label: round(float(f), 4) for label, f in zip(labels, floors)}}
    next_item = 0
    if builtin is not None:
        like = label_like(builtin.emb, pos, pos_label, floors)
        for i, row in enumerate(builtin.items):
            mask = builtin.item == i
            emb, hits = builtin.emb[mask], like[mask]
            if row["sha256"] in pos_sha or (row["kind"] == "event" and (hits >= 0).any()):
                why = "a training clip" if row["sha256"] in pos_sha else labels[int(hits[hits >= 0][0])]
                notes["builtin_dropped"].setdefault(why, []).append(row["category"])
                continue
            if row["kind"] != "event":
                emb = emb[hits < 0]
            if not len(emb):
                continue
            parts.append((emb, stable_fold(row["sha256"], n_folds), next_item, row["kind"], row["category"]))
            next_item += 1
            notes["builtin_items"] += 1
        notes["builtin_dropped"] = {k: {"n": len(v), "categories": sorted(set(v))}
                                    for k, v in notes["builtin_dropped"].items()}
    notes["builtin_beds"] = 0
    for j, bed in enumerate(beds or []):
        emb = bed.emb[label_like(bed.emb, pos, pos_label, floors) < 0]
        if len(emb):
            parts.append((emb, j % n_folds, next_item, "bed", f"bed:{bed.name}"))
            next_item += 1
            notes["builtin_beds"] += 1
    for bg in background:
        like = label_like(bg.emb, pos, pos_label, floors)
        keep = like < 0
        for s in range(0, len(bg.emb), SEGMENT_BLOCKS):
            seg = bg.emb[s:s + SEGMENT_BLOCKS][keep[s:s + SEGMENT_BLOCKS]]
            if len(seg):
                parts.append((seg, stable_fold(f"{bg.sha}:{s}", n_folds), next_item, "bed", f"background:{bg.name}"))
                next_item += 1
        top = np.bincount(like[like >= 0], minlength=len(labels)).argmax() if (~keep).any() else None
        notes["background_files"].append({"file": bg.name, "blocks": int(len(bg.emb)), "dropped_label_like":
                                          int((~keep).sum()), "like": None if top is None else labels[int(top)]})
    dropped_other = 0
    for ev in events or []:
        emb = ev.emb
        not_label = getattr(ev, "not_label", "")
        if len(emb) and not_label in labels:
            # a rejected event says "not this label", not "nothing": blocks that sound like another label are
            # left out (the clip may hold that label's sound, which the head must not learn as background)
            like = label_like(emb, pos, pos_label, floors)
            keep = (like < 0) | (like == labels.index(not_label))
            dropped_other += int((~keep).sum())
            emb = emb[keep]
        if len(emb):
            parts.append((emb, stable_fold(ev.sha, n_folds), next_item, "event", ev.category))
            next_item += 1
    notes["hard_negatives"] = sum(1 for ev in events or [] if len(ev.emb))
    notes["hard_negative_blocks_like_another_label"] = dropped_other
    if not parts:
        raise FieldearError("no negative blocks left (no built-in negatives and no --background given)",
                            "pass --background DIR with recordings of the site")
    emb = np.concatenate([p[0] for p in parts]).astype(np.float32)
    rep = [len(p[0]) for p in parts]
    pool = NegativePool(emb=emb, fold=np.repeat([p[1] for p in parts], rep), item=np.repeat([p[2] for p in parts], rep),
                        kind=np.repeat([p[3] for p in parts], rep), category=np.repeat([p[4] for p in parts], rep),
                        notes=notes)
    notes["blocks"] = {"bed": int((pool.kind == "bed").sum()), "event": int((pool.kind == "event").sum())}
    log.info("negatives: %d blocks (%d bed, %d event); dropped as label-like: %s", len(pool), notes["blocks"]["bed"],
             notes["blocks"]["event"], {k: v["n"] for k, v in notes["builtin_dropped"].items()} or "none")
    return pool
