"""`unknown` as an outcome of predict and batch (--unknown): a bundle with a novelty rule built here from the
committed default model, real clips from ../shared/data, and what `fieldear evaluate` makes of unknown rows."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import FieldearError
from runtime.evaluate.clip_eval import evaluate, row_unknown
from runtime.model.bundle import MODEL_JSON, load_bundle, write_bundle
from runtime.predict.batch import KNOWN_COLUMN, columns_for, run_batch
from runtime.predict.predict import is_unknown, predict_file
from tests.predict.test_predict import model_dir, real_clip

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]
KNOWN_LABEL = "dog"  # the only label with prototypes
OTHER_LABEL = "rain"
TAU = 0.99  # a block of another clip is never this close to a dog block; a prototyped dog clip is (1.0)


def _embeddings(bundle, clip: Path) -> np.ndarray:
    """The backbone stage's embeddings of a clip's blocks (what the novelty rule compares)."""
    from runtime.features.pipeline import FileBlocks
    from runtime.model.interpreter import Runner

    runner = Runner(bundle.stage_path(bundle.stages[0]), threads=1)
    return np.stack([runner.run_one(b.features) for b in FileBlocks(clip, bundle.frontend)])


def _novelty_bundle(out: Path, esc10: Path) -> Path:
    """The default model plus novelty.npz (prototypes: two dog clips) and model.json novelty; the checksums
    are recomputed by write_bundle."""
    src = load_bundle(model_dir())
    assert src.stages[0].role == "embedding"
    label = src.labels.index(KNOWN_LABEL)
    protos = np.concatenate([_embeddings(src, real_clip(esc10, KNOWN_LABEL, i)) for i in (0, 1)])
    npz = out.parent / "novelty_src.npz"
    np.savez(npz, prototypes=protos.astype(np.float32), proto_label=np.full(len(protos), label, np.int64))
    meta = {k: v for k, v in src.meta.items() if k not in ("json_sha256", "files")}
    # a label without prototypes has similarity -1: tau 0 gates it always; dog is kept only for dog-like blocks
    meta["novelty"] = {"file": "novelty.npz", "tau": {lab: (TAU if lab == KNOWN_LABEL else 0.0) for lab in src.labels}}
    files = {name: src.path / name for name in src.meta["files"]}
    files["novelty.npz"] = npz
    return write_bundle(out, files, meta)


def _plain_bundle(out: Path) -> Path:
    """The default model without any novelty rule of its own."""
    src = load_bundle(model_dir())
    meta = {k: v for k, v in src.meta.items() if k not in ("json_sha256", "files", "novelty")}
    novelty_file = (src.novelty or {}).get("file")
    return write_bundle(out, {name: src.path / name for name in src.meta["files"] if name != novelty_file}, meta)


@pytest.fixture(scope="module")
def novelty_dir(tmp_path_factory, esc10) -> Path:
    return _novelty_bundle(tmp_path_factory.mktemp("bundle") / "novelty", esc10)


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory) -> Path:
    return _plain_bundle(tmp_path_factory.mktemp("bundle") / "plain")


@pytest.fixture(scope="module")
def clips(tmp_path_factory, esc10) -> Path:
    """A prototyped dog clip and a rain clip, in folders named by their label (truth: folder)."""
    root = tmp_path_factory.mktemp("clips")
    for cls in (KNOWN_LABEL, OTHER_LABEL):
        (root / cls).mkdir()
        shutil.copy(real_clip(esc10, cls, 0), root / cls)
    return root


def _clip(clips: Path, cls: str) -> Path:
    return next((clips / cls).glob("*.wav"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, check=False)


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_is_unknown_is_per_label_thresholds_with_a_default_of_half():
    labels = ["a", "b"]
    assert is_unknown([0.3, 0.4], labels, {"a": 0.5, "b": 0.5})
    assert not is_unknown([0.3, 0.4], labels, {"b": 0.4})  # b reaches its own threshold
    assert is_unknown([0.49, 0.0], labels, {})  # no threshold: 0.5
    assert not is_unknown([0.5, 0.0], labels, {})
    assert not is_unknown([0.0, 0.2], labels, {"a": 0.9, "b": 0.1})  # not only the top label counts


def test_the_novelty_bundle_gates_the_other_clip_only(novelty_dir, clips):
    bundle = load_bundle(novelty_dir)
    assert bundle.novelty is not None and (novelty_dir / "novelty.npz").is_file()
    from runtime.model.novelty import load_novelty

    rule = load_novelty(novelty_dir / "novelty.npz", bundle.novelty["tau"], bundle.labels)
    k = bundle.labels.index(KNOWN_LABEL)
    assert rule.similarity(_embeddings(bundle, _clip(clips, OTHER_LABEL)))[:, k].max() < TAU
    assert rule.similarity(_embeddings(bundle, _clip(clips, KNOWN_LABEL)))[:, k].min() >= TAU


def test_clip_prediction_keeps_raw_scores_and_adds_known_scores(plain_dir, novelty_dir, clips):
    from runtime.model.model import Model

    plain, novel = Model.load(plain_dir, threads=1), Model.load(novelty_dir, threads=1)
    for cls, unknown in ((KNOWN_LABEL, False), (OTHER_LABEL, True)):
        a, b = predict_file(plain, _clip(clips, cls)), predict_file(novel, _clip(clips, cls))
        np.testing.assert_array_equal(a.scores, b.scores)  # label, top-k, accuracy as before
        np.testing.assert_array_equal(a.known_scores, a.scores)  # no rule: both equal
        assert a.label == b.label == cls and not a.unknown
        assert b.unknown is unknown and b.shown_label(True) == ("unknown" if unknown else cls)
        assert b.shown_label(False) == cls
    assert not predict_file(novel, _clip(clips, OTHER_LABEL)).known_scores.any()  # every label gated


def test_predict_unknown_text_and_json(novelty_dir, clips):
    dog, rain = str(_clip(clips, KNOWN_LABEL)), str(_clip(clips, OTHER_LABEL))
    r = _cli("predict", "--model", str(novelty_dir), "--unknown", dog, rain)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{dog}  {KNOWN_LABEL} ") and "unknown" not in lines[0]
    assert lines[1].startswith(f"{rain}  unknown  {OTHER_LABEL} ")  # the raw top-k follow
    r = _cli("predict", "--model", str(novelty_dir), "--unknown", "--json", dog, rain)
    assert r.returncode == 0, r.stderr
    a, b = (json.loads(line) for line in r.stdout.splitlines())
    assert (a["label"], a["unknown"]) == (KNOWN_LABEL, False)
    assert (b["label"], b["unknown"]) == ("unknown", True) and b["top"][0]["label"] == OTHER_LABEL
    assert max(b["scores"], key=b["scores"].get) == OTHER_LABEL  # scores stay the raw ones


def test_without_the_flag_the_output_is_the_plain_bundles(plain_dir, novelty_dir, clips):
    files = [str(_clip(clips, KNOWN_LABEL)), str(_clip(clips, OTHER_LABEL))]
    for extra in ([], ["--json"]):
        plain = _cli("predict", "--model", str(plain_dir), *extra, *files)
        novel = _cli("predict", "--model", str(novelty_dir), *extra, *files)
        assert plain.returncode == novel.returncode == 0, plain.stderr + novel.stderr
        if extra:
            drop = lambda out: [{k: v for k, v in json.loads(x).items() if k != "model_sha"} for x in out.splitlines()]
            assert drop(plain.stdout) == drop(novel.stdout)
            assert all(d["unknown"] is False for d in drop(novel.stdout))  # the key is always there
        else:
            assert plain.stdout == novel.stdout and "unknown" not in novel.stdout


def test_batch_unknown_rows_and_evaluate_counts_them_as_misses(novelty_dir, clips, tmp_path):
    labels = load_bundle(novelty_dir).labels
    plain_out, unk_out = tmp_path / "plain.csv", tmp_path / "unknown.csv"
    assert run_batch([str(clips)], plain_out, model_dir=str(novelty_dir)).ok == 2
    assert run_batch([str(clips)], unk_out, model_dir=str(novelty_dir), unknown=True).ok == 2
    plain_cols, plain_rows = _read_csv(plain_out)
    cols, rows = _read_csv(unk_out)
    assert plain_cols == columns_for(labels) and cols == columns_for(labels) + [KNOWN_COLUMN]
    by_folder = {Path(r["path"]).parent.name: r for r in rows}
    assert (by_folder[KNOWN_LABEL]["label"], by_folder[KNOWN_LABEL][KNOWN_COLUMN]) == (KNOWN_LABEL, "1")
    assert (by_folder[OTHER_LABEL]["label"], by_folder[OTHER_LABEL][KNOWN_COLUMN]) == ("unknown", "0")
    for old, new in zip(plain_rows, rows):  # the score columns (and the score) stay the raw scores
        assert {k: v for k, v in old.items() if k != "label"} == {k: v for k, v in new.items() if k not in ("label", KNOWN_COLUMN)}

    plain_ev = evaluate(plain_out, truth="folder")
    assert plain_ev.report["accuracy"] == 1.0
    ev = evaluate(unk_out, truth="folder")
    assert ev.report["n"] == 2 and ev.report["accuracy"] == 0.5
    assert ev.report["per_label"][OTHER_LABEL]["recall"] == 0.0 and ev.report["per_label"][KNOWN_LABEL]["recall"] == 1.0
    assert ev.report["confusion"]["cols"][-1] == "unknown"
    assert evaluate(unk_out, truth="folder", model_dir=str(novelty_dir)).report["accuracy"] == 0.5

    r = _cli("evaluate", str(unk_out), "--truth", "folder")
    assert r.returncode == 0, r.stderr
    assert "unknown" in r.stdout


def test_batch_jsonl_with_workers_and_resume_refuses_to_mix(novelty_dir, clips, tmp_path):
    out = tmp_path / "preds.jsonl"
    r = _cli("-q", "batch", str(clips), "--out", str(out), "--model", str(novelty_dir), "--unknown", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    rows = {Path(d["path"]).parent.name: d for d in map(json.loads, out.read_text().splitlines())}
    assert rows[OTHER_LABEL]["label"] == "unknown" and rows[OTHER_LABEL][KNOWN_COLUMN] == 0
    assert rows[KNOWN_LABEL][KNOWN_COLUMN] == 1
    assert evaluate(out, truth="folder").report["accuracy"] == 0.5
    with pytest.raises(FieldearError, match="written with --unknown"):
        run_batch([str(clips)], out, model_dir=str(novelty_dir), resume=True)
    csv_out = tmp_path / "preds.csv"
    run_batch([str(clips / KNOWN_LABEL)], csv_out, model_dir=str(novelty_dir))
    with pytest.raises(FieldearError, match="written without --unknown"):
        run_batch([str(clips)], csv_out, model_dir=str(novelty_dir), resume=True, unknown=True)
    summary = run_batch([str(clips)], csv_out, model_dir=str(novelty_dir), resume=True)
    assert (summary.ok, summary.skipped) == (1, 1)


def test_evaluate_reads_rows_with_and_without_the_known_column():
    labels = ["cat", "dog"]
    assert not row_unknown({"label": "dog"}, labels)
    assert row_unknown({"label": "unknown"}, labels)
    assert row_unknown({"label": "dog", KNOWN_COLUMN: "0"}, labels) and row_unknown({KNOWN_COLUMN: 0}, labels)
    assert not row_unknown({"label": "dog", KNOWN_COLUMN: "1"}, labels)
    assert not row_unknown({"label": "unknown"}, ["unknown", "dog"])  # a model label of that name
    assert not row_unknown({"label": "", KNOWN_COLUMN: ""}, labels)  # an error row


def test_unknown_refuses_a_model_with_a_label_named_unknown():
    from runtime.predict.batch import check_unknown_labels

    check_unknown_labels(["cat", "dog"])
    with pytest.raises(FieldearError, match="label named 'unknown'"):
        check_unknown_labels(["cat", "unknown"])


def test_the_test_bundle_has_fresh_checksums(novelty_dir):
    meta = json.loads((novelty_dir / MODEL_JSON).read_text())
    assert "novelty.npz" in meta["files"] and meta["json_sha256"] == load_bundle(novelty_dir).sha256
