"""Cross-validation splits that never leak.

Clips that must stay together form one *unit*: clips joined by the same manifest ``group``, or by
identical audio (same ``sha``), transitively. A unit is never on both sides of a split.

* Every clip has a ``fold`` (manifest column): leave-one-fold-out over those folds (e.g. ESC-10's
  official five). A unit that spans folds would leak, so its clips outside the held-out fold are
  dropped from that split's training side (logged).
* Otherwise: stratified group k-fold over the units, deterministic for a given seed. When a label
  has fewer units than ``n_folds``, fewer folds are used (logged); a label with a single unit makes
  cross-validation impossible (DatasetError).
"""

from __future__ import annotations

import logging

import numpy as np

from convert.data.dataset import Dataset
from runtime.errors import DatasetError

log = logging.getLogger(__name__)


def units(dataset: Dataset) -> np.ndarray:
    """Unit id per clip: clips sharing a group or identical audio get the same id (union-find)."""
    n = len(dataset.items)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of: dict[tuple[str, str], int] = {}
    for i, clip in enumerate(dataset.items):
        keys = [("sha", clip.sha)]
        if clip.group is not None:
            keys.append(("group", clip.group))
        for key in keys:
            j = first_of.setdefault(key, i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    roots = [find(i) for i in range(n)]
    _, ids = np.unique(roots, return_inverse=True)
    return ids.astype(np.int64)


def _fold_order(folds: list[str]) -> list[str]:
    names = sorted(set(folds))
    try:
        return sorted(names, key=int)
    except ValueError:
        return names


def _leave_one_fold_out(dataset: Dataset, unit: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    folds = np.array([c.fold for c in dataset.items], dtype=object)
    names = _fold_order(list(folds))
    if len(names) < 2:
        raise DatasetError(
            f"every clip is in fold {names[0]!r}; leave-one-fold-out needs at least two folds",
            "give the clips different fold numbers, or leave the fold column empty to split automatically",
        )
    splits = []
    for name in names:
        val = np.flatnonzero(folds == name)
        train = np.flatnonzero(folds != name)
        leaking = np.isin(unit[train], unit[val])
        if leaking.any():
            log.warning(
                "fold %s: %d training clip(s) share a group or identical audio with held-out clips; "
                "left out of this fold's training set",
                name, int(leaking.sum()),
            )
            train = train[~leaking]
        splits.append((train, val))
    log.info("leave-one-fold-out over %d folds (%s)", len(names), ", ".join(names))
    return splits


def _stratified_group_kfold(
    y: np.ndarray, unit: np.ndarray, n_labels: int, n_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    n_units = int(unit.max()) + 1
    per_unit = np.zeros((n_units, n_labels), dtype=np.float64)
    np.add.at(per_unit, (unit, y), 1.0)
    totals = per_unit.sum(axis=0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_units)
    # biggest and purest units first (as scikit-learn's StratifiedGroupKFold), random among equals
    spread = per_unit[order].std(axis=1)
    order = order[np.lexsort((-spread, -per_unit[order].sum(axis=1)))]
    fold_counts = np.zeros((n_folds, n_labels), dtype=np.float64)
    fold_of_unit = np.zeros(n_units, dtype=np.int64)
    diag = np.arange(n_folds)
    for u in order:
        # imbalance (mean over labels of the spread of label shares across folds) for each choice of fold
        trial = np.repeat(fold_counts[None], n_folds, axis=0)
        trial[diag, diag] += per_unit[u]
        imbalance = np.round(np.std(trial / totals, axis=1).mean(axis=1), 12)
        # least imbalance, then the smallest fold, then the first
        best = int(np.lexsort((diag, fold_counts.sum(axis=1), imbalance))[0])
        fold_counts[best] += per_unit[u]
        fold_of_unit[u] = best
    clip_fold = fold_of_unit[unit]
    splits = []
    for f in range(n_folds):
        val = np.flatnonzero(clip_fold == f)
        train = np.flatnonzero(clip_fold != f)
        if len(val) == 0:
            continue
        splits.append((train, val))
    return splits


def make_splits(dataset: Dataset, n_folds: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(train_idx, val_idx)] over ``dataset.items``; see the module doc for the rules."""
    if n_folds < 2:
        raise ValueError("n_folds must be >= 2")
    unit = units(dataset)
    n_dups = len(dataset.items) - len(np.unique(unit))
    if n_dups:
        log.info("%d clip(s) share a group or identical audio with another clip; kept together", n_dups)
    if dataset.items and all(c.fold is not None for c in dataset.items):
        return _leave_one_fold_out(dataset, unit)

    y = dataset.y()
    labels = dataset.labels
    units_per_label = {
        label: len(np.unique(unit[y == i])) for i, label in enumerate(labels)
    }
    smallest = min(units_per_label, key=units_per_label.get)
    k = min(n_folds, units_per_label[smallest])
    if k < 2:
        raise DatasetError(
            f"label {smallest!r} has only one independent clip (its clips share a group or identical audio); "
            "cross-validation needs at least 2 per label",
            f"add recordings of {smallest!r} from another source",
        )
    if k < n_folds:
        log.warning(
            "using %d folds instead of %d: label %r has only %d independent clip(s)",
            k, n_folds, smallest, units_per_label[smallest],
        )
    splits = _stratified_group_kfold(y, unit, len(labels), k, seed)
    for f, (_, val) in enumerate(splits):
        missing = [labels[i] for i in range(len(labels)) if not np.any(y[val] == i)]
        if missing:
            log.warning("fold %d holds no validation clip of %s", f + 1, ", ".join(missing))
    log.info(
        "stratified group %d-fold over %d units (seed %d): validation sizes %s",
        len(splits), int(unit.max()) + 1, seed, [len(v) for _, v in splits],
    )
    return splits
