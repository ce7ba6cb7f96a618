"""The built-in negative set (convert/data/negative_set, built by `make negatives`) and its loader."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from convert.data.negatives import NEGATIVE_SET_DIR, NegativeSet, load_negatives
from convert.tools import build_negatives as bn
from runtime.errors import FieldearError
from runtime.model.bundle import sha256_file
from runtime.paths import BACKBONE_FILE
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def backbone_sha() -> str:
    return sha256_file(BACKBONE_FILE)


@pytest.fixture(scope="module")
def neg(backbone_sha) -> NegativeSet:
    return load_negatives(backbone_sha)


def test_committed_set_loads_against_the_committed_backbone(neg, backbone_sha):
    assert neg.backbone_sha256 == backbone_sha
    assert neg.emb.dtype == np.float32 and neg.emb.shape == (len(neg.levels), 512)
    assert neg.levels.dtype == np.float32 and neg.item.dtype == np.int64
    assert np.isfinite(neg.emb).all() and np.isfinite(neg.levels).all()
    assert [int(r["item"]) for r in neg.items] == list(range(len(neg.items)))
    # every block of every item, items in order
    assert (np.diff(neg.item) >= 0).all()
    assert set(np.unique(neg.item)) == set(range(len(neg.items)))
    for r in neg.items:
        assert len(neg.item_blocks(int(r["item"]))) == int(r["n_blocks"]) > 0
    assert sum(int(r["n_blocks"]) for r in neg.items) == len(neg.emb)


def test_every_item_is_credited_and_no_bench_material(neg):
    kinds = {r["kind"] for r in neg.items}
    assert kinds == {"bed", "event"}
    for r in neg.items:
        assert r["licence"] and r["author"] and r["licence_url"], r
        assert len(r["sha256"]) == 64
        assert "great_tit" not in r["file"] and "spinetail" not in r["file"] and "birdsong" not in r["file"]
        if r["source"].startswith("ESC-10"):
            assert r["original_url"].startswith("http"), r
            assert r["fold"] in {"1", "2", "3", "4"}, r
            assert r["kind"] == "event" and r["category"] == Path(r["file"]).parent.name
            assert not Path(r["file"]).name.startswith("esc10_5-")
        elif r["source"] == "FSDD":
            speaker = Path(r["file"]).stem.split("_")[1]
            assert speaker in bn.NEGATIVE_SPEAKERS
            assert (r["kind"], r["category"], r["licence"]) == ("event", "speech", "CC-BY-SA-4.0")
            assert int(Path(r["file"]).stem.split("_")[2]) < bn.FSDD_PER_DIGIT
        elif r["category"].startswith("synthetic:"):
            assert (r["kind"], r["licence"], r["file"]) == ("bed", "CC0-1.0", "")
        else:
            assert (r["kind"], r["category"]) == ("bed", "ambient")
            assert r["file"].startswith("soundscapes/forest_24h/")
    assert {r["category"] for r in neg.items if r["category"].startswith("synthetic:")} == \
        {f"synthetic:{name}" for name, _, _ in bn.SYNTHETIC}
    assert not (set(bn.NEGATIVE_SPEAKERS) & {"nicolas", "theo", "yweweler"})
    for name in ("ATTRIBUTION.md", "LICENSE-scikit-maad-BSD-3.txt", "manifest.json"):
        assert (NEGATIVE_SET_DIR / name).is_file()


def test_items_are_exactly_the_documented_selection_of_shared(neg):
    shared = shared_path()
    forest = sorted((shared_path("soundscapes", "forest_24h")).glob("*.wav"))
    items = bn.forest_items(shared) + bn.esc10_items(shared) + bn.fsdd_items(shared)
    assert [(i.file, i.sha) for i in items] == [(r["file"], r["sha256"]) for r in neg.items[:len(items)]]
    # the even forest files only (the odd ones are the bench's test beds)
    assert [i.path for i in items if i.category == "ambient"] == forest[0::2]
    esc_all = sorted(shared_path("esc10").glob("*/esc10_*.wav"))
    assert len([i for i in items if i.fold]) == len([p for p in esc_all if bn.esc10_fold(p) != 5])
    assert len(neg.items) == len(items) + len(bn.SYNTHETIC)


def test_rebuilding_one_item_of_each_source_gives_the_committed_embeddings(neg, tmp_path):
    shared = shared_path()
    synth = "pink_-30dBFS"
    items = [bn.forest_items(shared)[0], bn.esc10_items(shared)[0], bn.fsdd_items(shared)[0],
             *bn.synthetic_items(tmp_path / "wav", names=(synth,))]
    by_key = {r["file"] or r["category"]: r for r in neg.items}
    rows = [by_key[it.file or it.category] for it in items]
    assert len({r["source"] for r in rows}) == 4
    assert [it.sha for it in items] == [r["sha256"] for r in rows]  # the synthetic WAV is byte-identical too
    embs, levels = bn.embed_items(items, cache_dir=tmp_path / "cache")
    for r, e, lev in zip(rows, embs, levels):
        i = int(r["item"])
        np.testing.assert_allclose(e, neg.item_blocks(i), rtol=1e-3, atol=1e-3, err_msg=r["file"] or r["category"])
        np.testing.assert_allclose(lev, neg.levels[neg.item == i], rtol=1e-5, atol=1e-4)


def test_item_blocks_and_subset(neg):
    keep = neg.item < 3
    sub = neg.subset(keep)
    assert len(sub.emb) == int(keep.sum()) == len(sub.levels) == len(sub.item)
    assert sub.items is neg.items
    np.testing.assert_array_equal(sub.item_blocks(1), neg.item_blocks(1))
    assert len(sub.item_blocks(5)) == 0
    with pytest.raises(ValueError):
        neg.subset(np.arange(3))


def test_wrong_backbone_sha_is_a_fieldear_error(backbone_sha):
    with pytest.raises(FieldearError) as exc:
        load_negatives("0" * 64)
    assert "made with another backbone" in exc.value.message
    assert exc.value.hint == "run `make negatives`"


def test_missing_directory_or_file_is_a_fieldear_error(tmp_path, backbone_sha):
    with pytest.raises(FieldearError) as exc:
        load_negatives(backbone_sha, root=tmp_path / "nowhere")
    assert exc.value.hint == "run `make negatives`"
    partial = tmp_path / "partial"
    shutil.copytree(NEGATIVE_SET_DIR, partial)
    (partial / "embeddings.npz").unlink()
    with pytest.raises(FieldearError) as exc:
        load_negatives(backbone_sha, root=partial)
    assert "embeddings.npz" in exc.value.message and exc.value.hint == "run `make negatives`"
