"""convert.data.splits: no group and no identical audio on both sides of any split."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from convert.data.dataset import Clip, Dataset, load_dataset, write_manifest
from convert.data.splits import make_splits, units
from runtime.errors import DatasetError

sf = pytest.importorskip("soundfile")  # train extra; not needed by the device run (-m runtime)

ESC_NAME = re.compile(r"esc10_(\d)-(\d+)-")


def assert_no_leak(d: Dataset, splits) -> None:
    for train, val in splits:
        assert len(np.intersect1d(train, val)) == 0
        for attr in ("sha", "group"):
            left = {getattr(d.items[i], attr) for i in train} - {None}
            right = {getattr(d.items[i], attr) for i in val} - {None}
            assert not (left & right), f"{attr} on both sides"


@pytest.fixture(scope="module")
def esc10_official(esc10, tmp_path_factory):
    rows = []
    for path in sorted(esc10.glob("*/*.wav")):
        m = ESC_NAME.match(path.name)
        rows.append((path, path.parent.name, m[1], m[2]))
    return load_dataset(write_manifest(rows, tmp_path_factory.mktemp("esc") / "esc10.csv"))


def test_esc10_official_folds(esc10_official):
    d = esc10_official
    splits = make_splits(d, n_folds=3, seed=5)  # folds given: n_folds and seed do not matter
    assert len(splits) == 5
    for k, (train, val) in enumerate(splits, start=1):
        assert {d.items[i].fold for i in val} == {str(k)}
        assert len(train) + len(val) == len(d)
    assert np.array_equal(np.sort(np.concatenate([v for _, v in splits])), np.arange(len(d)))
    assert_no_leak(d, splits)
    assert len(np.unique(units(d))) < len(d)  # takes of one recording are joined


def test_esc10_group_kfold_without_folds(esc10_official):
    d = esc10_official
    no_folds = Dataset([Clip(c.path, c.label, None, c.group, c.duration_s, c.sha) for c in d.items], d.labels)
    splits = make_splits(no_folds, n_folds=5, seed=0)
    assert len(splits) == 5
    assert_no_leak(no_folds, splits)
    y = no_folds.y()
    for _, val in splits:  # stratified: every label in every fold, sizes close to 1/5
        counts = np.bincount(y[val], minlength=len(d.labels))
        assert counts.min() >= 5 and abs(len(val) - len(d) / 5) <= 12
    again = make_splits(no_folds, n_folds=5, seed=0)
    other = make_splits(no_folds, n_folds=5, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(splits, other))


def test_injected_duplicates_stay_together(tmp_path, esc10):
    root = tmp_path / "data"
    sources = {}
    for label in ("dog", "rain", "sneezing"):
        (root / label).mkdir(parents=True)
        for src in sorted((esc10 / label).glob("*.wav"))[:8]:
            shutil.copy(src, root / label / src.name)
        sources[label] = sorted((root / label).glob("*.wav"))
    # re-encoded copies (float32, and a 24-bit copy under another name), plus a mislabelled copy
    for label, files in sources.items():
        for k, src in enumerate(files[:3]):
            x, rate = sf.read(src, dtype="float32")
            sf.write(root / label / f"dup_{k}_f32.wav", x, rate, subtype="FLOAT")
            sf.write(root / label / f"dup_{k}_p24.wav", x, rate, subtype="PCM_24")
    x, rate = sf.read(sources["dog"][5], dtype="float32")
    sf.write(root / "rain" / "dog_as_rain.wav", x, rate, subtype="PCM_16")
    d = load_dataset(root)
    assert len(d.duplicates) == 10
    for seed in range(4):
        splits = make_splits(d, n_folds=4, seed=seed)
        assert len(splits) == 4
        assert_no_leak(d, splits)
        assert np.array_equal(np.sort(np.concatenate([v for _, v in splits])), np.arange(len(d)))


def _synthetic(spec) -> Dataset:
    """Clips without audio: (label, fold, group, sha) tuples."""
    items = [Clip(Path(f"c{i}.wav"), label, fold, group, 1.0, sha) for i, (label, fold, group, sha) in enumerate(spec)]
    return Dataset(items, sorted({c.label for c in items}))


def test_groups_and_shas_join_transitively():
    d = _synthetic([("a", None, "g1", "s1"), ("a", None, None, "s1"), ("a", None, "g2", "s2"),
                    ("b", None, "g2", "s3"), ("b", None, None, "s4"), ("b", None, None, "s5")])
    u = units(d)
    assert u[0] == u[1] and u[2] == u[3] and len(set(u)) == 4


def test_folds_with_a_group_across_folds_drop_training_clips(caplog):
    spec = [(lab, str(f), f"{lab}{f}", f"{lab}{f}") for lab in "ab" for f in (1, 2, 3)]
    spec.append(("a", "3", "a1", "x"))  # group a1 also in fold 3: would leak
    d = _synthetic(spec)
    splits = make_splits(d)
    assert len(splits) == 3
    assert_no_leak(d, splits)
    train3 = splits[2][0]
    assert 0 not in train3  # the fold-1 clip of group a1 is left out of fold 3's training
    assert "left out of this fold's training set" in caplog.text
    with pytest.raises(DatasetError, match="at least two folds"):
        make_splits(_synthetic([("a", "1", None, "1"), ("b", "1", None, "2")]))


def test_small_classes_use_fewer_folds(caplog):
    spec = [("big", None, None, f"b{i}") for i in range(20)] + [("small", None, None, f"s{i}") for i in range(3)]
    caplog.set_level(logging.INFO)
    splits = make_splits(_synthetic(spec), n_folds=5)
    assert len(splits) == 3
    assert "using 3 folds instead of 5" in caplog.text
    y = _synthetic(spec).y()
    assert all(np.sum(y[val] == 1) == 1 for _, val in splits)
    # partial folds are ignored (k-fold used instead)
    partial = _synthetic([("a", "1", None, "1"), ("a", None, None, "2"), ("b", "2", None, "3"), ("b", None, None, "4")])
    assert len(make_splits(partial)) == 2
    # two clips of one label that are the same audio: no way to cross-validate
    with pytest.raises(DatasetError, match="'b' has only one independent clip"):
        make_splits(_synthetic([("a", None, None, "1"), ("a", None, None, "2"), ("b", None, None, "3"),
                                ("b", None, None, "3")]))
