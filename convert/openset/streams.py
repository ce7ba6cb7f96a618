"""Validation streams: what ``train`` listens to before the model goes to the field.

For each cross-validation fold, a stream of backbone blocks in time order: the fold's held-out clips (the
targets) and the fold's negative event items (distractors, at most as many as targets), in random order,
each separated by a run of 2-6 consecutive blocks from one of the fold's background beds (built-in ambient
and synthetic beds, the user's ``--background``). A target's true interval spans its loud blocks (those
less than QUIET_DB below the clip's loudest). The stream is scored by the fold's int8 head exactly as the
device would score those blocks; nothing of a fold's stream was seen by the fold's model.

Composed in embedding space (a clip's blocks are its own, not re-mixed over the bed), so that it costs no
backbone run and ``train --update`` can rebuild it from the bundle's cached embeddings alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

GAP_BLOCKS = (2, 6)  # background blocks between two items (inclusive)


@dataclass
class Placed:
    kind: str  # "target" | "distractor"
    label: str  # the target's label, or the distractor's category
    first: int  # block index of the item's first block
    n: int  # its blocks
    loud: tuple[int, int]  # block range [a, b) of the true interval (targets)


@dataclass
class ValidationStream:
    fold: int
    emb: np.ndarray  # (n_blocks, dim)
    items: list[Placed] = field(default_factory=list)

    @property
    def n_blocks(self) -> int:
        return int(len(self.emb))


def compose_stream(fold: int, targets: list[tuple[str, np.ndarray, np.ndarray]], distractors: list[tuple[str, np.ndarray]],
                   beds: list[np.ndarray], rng: np.random.Generator) -> ValidationStream:
    """``targets``: (label, block embeddings, loud mask) per held-out clip; ``distractors``: (category, block
    embeddings); ``beds``: block embeddings of each background bed (at least one block each)."""
    beds = [b for b in beds if len(b)]
    if not beds:
        raise ValueError(f"fold {fold}: no background beds for a validation stream")
    order = [("target", k) for k in range(len(targets))] + [("distractor", k) for k in range(len(distractors))]
    order = [order[i] for i in rng.permutation(len(order))]
    chunks, items, at = [], [], 0

    def gap():
        nonlocal at
        bed = beds[int(rng.integers(len(beds)))]
        n = int(rng.integers(GAP_BLOCKS[0], GAP_BLOCKS[1] + 1))
        start = int(rng.integers(len(bed)))
        run = np.take(bed, np.arange(start, start + n) % len(bed), axis=0)  # a bed shorter than the gap wraps
        chunks.append(run)
        at += n

    for kind, k in order:
        gap()
        if kind == "target":
            label, emb, loud = targets[k]
            idx = np.flatnonzero(loud)
            span = (at + int(idx[0]), at + int(idx[-1]) + 1) if len(idx) else (at, at + len(emb))
        else:
            label, emb = distractors[k]
            span = (at, at + len(emb))
        if not len(emb):
            continue
        chunks.append(emb)
        items.append(Placed(kind, label, at, len(emb), span))
        at += len(emb)
    gap()
    return ValidationStream(fold=fold, emb=np.concatenate(chunks).astype(np.float32), items=items)
