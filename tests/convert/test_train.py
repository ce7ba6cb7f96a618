"""`fieldear train` end to end on a small real ESC-10 subset, and its bad-input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.cli.main import main

pytestmark = pytest.mark.train

CLASSES = ("dog", "rooster", "chainsaw")


def _subset(esc10: Path, root: Path, classes=CLASSES, per_class: int = 8) -> Path:
    """per_class clips of each class, spread over the official folds, copied into root/<label>/."""
    for label in classes:
        files = sorted((esc10 / label).glob("*.wav"))
        by_fold: dict[str, list[Path]] = {}
        for f in files:
            by_fold.setdefault(f.name.split("_")[1][0], []).append(f)
        picked = []
        while len(picked) < per_class:
            for fold in sorted(by_fold):
                if by_fold[fold] and len(picked) < per_class:
                    picked.append(by_fold[fold].pop(0))
        (root / label).mkdir(parents=True)
        for f in picked:
            shutil.copyfile(f, root / label / f.name)
    return root


@pytest.fixture(scope="module")
def small_data(esc10, tmp_path_factory) -> Path:
    return _subset(esc10, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def trained(small_data, cache_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "mine"
    code = main(["train", str(small_data), "--out", str(out), "--cache", str(cache_dir),
                 "--candidates", "backbone", "--folds", "4", "--seed", "1"])
    assert code == 0
    return out


def test_train_writes_a_bundle_the_runtime_loads_and_that_predicts_its_classes(trained, small_data):
    from convert.families.embed import clip_blocks
    from runtime.model.model import Model

    model = Model.load(trained)
    assert model.labels == sorted(CLASSES)
    assert [s.role for s in model.bundle.stages] == ["embedding", "classifier"]
    assert all(r.input_spec["dtype"] == "int8" and r.output_spec["dtype"] == "int8" for r in model.runners)
    correct = total = 0
    for label in CLASSES:
        for wav in sorted((small_data / label).glob("*.wav"))[:4]:
            scores = model.pool(model.score_blocks(clip_blocks(wav, model.params)))
            assert scores.shape == (3,)
            if model.bundle.clip_pooling == "mean":
                assert np.isclose(scores.sum(), 1.0, atol=0.05)
            correct += model.labels[int(np.argmax(scores))] == label
            total += 1
    assert correct / total >= 0.8  # chance is 1/3


def test_bundle_metadata_and_report(trained):
    meta = json.loads((trained / "model.json").read_text())
    assert set(meta["thresholds"]) == set(CLASSES)
    assert all(0.0 <= t <= 1.0 for t in meta["thresholds"].values())
    m = meta["metrics"]
    assert m["cv_accuracy"] > 0.6  # out-of-fold, int8 models; chance 0.33
    q = m["quantization"]
    assert q["n_clips"] == 24 and 0.0 <= q["top1_agreement"] <= 1.0
    assert meta["dataset"]["n_clips"] == 24 and meta["dataset"]["classes"] == {c: 8 for c in sorted(CLASSES)}
    for name in ("report.md", "report.json", "confusion.png"):
        assert (trained / name).is_file(), name
    report = json.loads((trained / "report.json").read_text())
    assert len(report["cv"]["y_true"]) == 24
    names = [c["name"] for c in report["candidates"]]
    assert any(n.startswith("backbone+logreg") for n in names)
    assert report["choice"]["name"] == m["candidate"]
    assert "dB below their clip's loudest block" in report["model"]["training_blocks"]
    assert "head training data" in (trained / "report.md").read_text()


def test_existing_out_is_refused_without_force(trained, small_data, cache_dir, capsys):
    before = (trained / "model.json").read_bytes()
    code = main(["train", str(small_data), "--out", str(trained), "--cache", str(cache_dir)])
    err = capsys.readouterr().err
    assert code != 0
    assert "exists" in err and "--force" in err and "Traceback" not in err
    assert (trained / "model.json").read_bytes() == before


def test_second_run_uses_the_embedding_cache(small_data, cache_dir, trained, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="convert.families.embed")
    out = tmp_path / "again"
    assert main(["train", str(small_data), "--out", str(out), "--cache", str(cache_dir), "--candidates", "backbone",
                 "--folds", "4", "--seed", "1"]) == 0
    assert any("24 from cache" in r.getMessage() for r in caplog.records)
    # same data, same seed -> same head weights and thresholds
    a = json.loads((trained / "model.json").read_text())
    b = json.loads((out / "model.json").read_text())
    assert a["thresholds"] == b["thresholds"]
    assert (trained / "head.tflite").read_bytes() == (out / "head.tflite").read_bytes()


def _one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    lines = [x for x in err.splitlines() if x.startswith("fieldear train: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_bad_inputs_give_one_line_errors(esc10, tmp_path, capsys):
    out = str(tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no audio" in _one_line_error(capsys, ["train", str(empty), "--out", out])

    one = tmp_path / "one"
    _subset(esc10, one, classes=("dog",), per_class=3)
    assert "one label" in _one_line_error(capsys, ["train", str(one), "--out", out])

    single = tmp_path / "single"
    _subset(esc10, single, classes=("dog", "rain"), per_class=3)
    for extra in sorted((single / "rain").glob("*.wav"))[1:]:
        extra.unlink()
    assert "'rain' has 1" in _one_line_error(capsys, ["train", str(single), "--out", out])

    fake = tmp_path / "fake"
    _subset(esc10, fake, classes=("dog", "rain"), per_class=3)
    for wav in sorted((fake / "rain").glob("*.wav"))[:2]:
        wav.write_text("this is not audio\n")
    msg = _one_line_error(capsys, ["train", str(fake), "--out", out])
    assert "rain" in msg

    csv_cols = tmp_path / "cols.csv"
    csv_cols.write_text("file_name,class\nx.wav,dog\n")
    assert "column" in _one_line_error(capsys, ["train", str(csv_cols), "--out", out])

    csv_paths = tmp_path / "paths.csv"
    csv_paths.write_text("path,label\nnowhere/a.wav,dog\nnowhere/b.wav,rain\n")
    assert "do not exist" in _one_line_error(capsys, ["train", str(csv_paths), "--out", out])

    assert not Path(out).exists()


def test_unknown_candidate_and_missing_out(small_data, capsys):
    with pytest.raises(SystemExit):
        main(["train", str(small_data), "--out", "x", "--candidates", "forest"])
    assert "unknown candidate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(small_data)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "the following arguments are required: --out" in err and "Traceback" not in err


def test_strict_fails_when_int8_loses_accuracy(small_data, cache_dir, tmp_path, monkeypatch, capsys):
    import convert.train as train_module

    real = train_module.int8_cv

    def degraded(family, trial, splits, y, n_labels, seed):
        oof, sizes = real(family, trial, splits, y, n_labels, seed)
        worse = oof.copy()
        worse[:3] = np.roll(worse[:3], 1, axis=1)  # three clips now get another clip's top label
        return worse, sizes

    monkeypatch.setattr(train_module, "int8_cv", degraded)
    argv = ["train", str(small_data), "--cache", str(cache_dir), "--candidates", "backbone", "--folds", "4"]
    out = tmp_path / "strict"
    line = _one_line_error(capsys, argv + ["--out", str(out), "--strict"])
    assert "int8 quantization loses" in line and "--strict" in line
    assert not out.exists()
    assert main(argv + ["--out", str(out)]) == 0  # without --strict the loss is reported, not fatal
    q = json.loads((out / "model.json").read_text())["metrics"]["quantization"]
    assert q["int8_loss_points"] > 1.0


def test_quiet_training_blocks_are_trained_towards_equal_scores():
    """Blocks QUIET_DB below their clip's loudest enter the training set once per label with weight 1/n;
    the others keep their clip's label; every level-augmented copy gets the same rule."""
    from convert.families.backbone import QUIET_DB, BackboneFamily
    from convert.options import TrainOptions

    fam = BackboneFamily(TrainOptions(data=".", out="unused", balance=False))
    emb = [np.arange(3 * 4, dtype=np.float32).reshape(3, 4), np.ones((1, 4), np.float32), np.zeros((2, 4), np.float32)]
    lv = [np.array([-10.0, -10.0 - QUIET_DB - 1, -15.0]), np.array([-80.0]), np.array([-90.0, -20.0])]
    fam.inputs, fam.augmented, fam.levels = emb, [emb], [lv, lv]
    x, y, w = fam.training_set([0, 1, 2], np.array([2, 0, 1]), n_labels=3)
    assert len(x) == len(y) == len(w) == 2 * (2 + 1 + 1 + 3 + 3)  # per copy: 2 + 1 + 1 loud, 2 quiet x 3 labels
    full = w == 1.0
    assert np.isclose(w.sum(), 2 * 6)  # each block counts once
    assert sorted(y[full].tolist()) == sorted([2, 2, 0, 1] * 2)
    quiet_rows = x[~full]
    assert {tuple(r) for r in quiet_rows} == {tuple(emb[0][1]), tuple(emb[2][0])}
    assert np.allclose(w[~full], 1 / 3) and sorted(y[~full].tolist()) == sorted([0, 1, 2] * 4)


def test_balanced_training_gives_every_label_the_same_total_weight():
    """With balance (the default) a label with few loud blocks weighs as much in total as one with many; the
    quiet blocks' equal-score rows keep their 1/n weight; the total of the labelled weight is unchanged."""
    from convert.families.backbone import BackboneFamily
    from convert.options import TrainOptions

    fam = BackboneFamily(TrainOptions(data=".", out="unused"))
    emb = [np.ones((6, 4), np.float32), np.ones((1, 4), np.float32), np.ones((2, 4), np.float32)]
    lv = [np.full(6, -10.0), np.array([-12.0]), np.array([-11.0, -60.0])]  # the last clip: one loud, one quiet
    fam.inputs, fam.augmented, fam.levels = emb, [], [lv]
    x, y, w = fam.training_set([0, 1, 2], np.array([0, 1, 2]), n_labels=3)
    loud = w != 1 / 3
    totals = [w[loud & (y == k)].sum() for k in range(3)]
    assert np.allclose(totals, totals[0]) and np.isclose(sum(totals), 6 + 1 + 1)
    assert np.allclose(w[~loud], 1 / 3) and (~loud).sum() == 3


def test_block_levels_follow_the_gain_and_find_the_zero_padding(esc10):
    from convert.families.embed import block_levels_db, clip_blocks
    from runtime.features.frontend import BACKBONE

    path = sorted((esc10 / "dog").glob("*.wav"))[0]
    plain, quieter = block_levels_db(clip_blocks(path, BACKBONE), BACKBONE), block_levels_db(clip_blocks(path, BACKBONE, gain=0.25), BACKBONE)
    loud = np.argmax(plain)
    assert abs((plain[loud] - quieter[loud]) - 12.04) < 0.5
    assert block_levels_db(np.zeros((1, BACKBONE.block_frames, BACKBONE.n_mels), np.float32), BACKBONE)[0] < -100


def test_train_output_has_no_native_start_up_lines_and_names_only_the_final_report(small_data, cache_dir, tmp_path):
    """A fresh process (TensorFlow's native lines come at its first import): no absl/oneDNN/CUDA/cpu_feature_guard
    or XNNPACK lines, no Python module names, and the only report path printed is the bundle's."""
    import subprocess
    import sys

    out = tmp_path / "quiet"
    run = subprocess.run([sys.executable, "-m", "runtime.cli", "train", str(small_data), "--out", str(out), "--cache",
                          str(cache_dir), "--candidates", "backbone", "--folds", "2"],
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    text = run.stdout + run.stderr
    for noise in ("absl", "oneDNN", "cuInit", "cuda", "cpu_feature_guard", "XNNPACK", "TensorFlow", "convert.",
                  "runtime."):
        assert noise not in text, (noise, text)
    reports = [line for line in text.splitlines() if "report" in line and "/" in line]
    assert reports == [line for line in run.stdout.splitlines() if line.endswith(f"{out}/report.md")], text
    assert len(reports) == 1


def test_time_shifted_blocks_are_the_blocks_of_the_clip_with_its_start_cut(esc10):
    from convert.families.embed import clip_blocks
    from runtime.audio.files import read_audio
    from runtime.features.frontend import BACKBONE
    from runtime.features.pipeline import blocks_of, stack

    path = sorted((esc10 / "dog").glob("*.wav"))[0]
    skip = 0.5 * BACKBONE.block_hop_seconds
    samples, rate = read_audio(path)
    expected = stack(blocks_of(samples[int(round(skip * rate)):], rate, BACKBONE), BACKBONE)
    shifted, plain = clip_blocks(path, BACKBONE, skip_seconds=skip), clip_blocks(path, BACKBONE)
    assert shifted.shape == expected.shape and len(shifted) >= 2
    np.testing.assert_array_equal(shifted, expected)
    assert not np.allclose(shifted[0], plain[0])  # the grid really moved


def test_shifted_copy_skips_clips_shorter_than_a_block_plus_the_shift(esc10, shared_data, tmp_path):
    from types import SimpleNamespace

    from convert.families.backbone import BackboneFamily
    from convert.families.embed import dataset_embeddings
    from convert.options import TrainOptions
    from runtime.features.frontend import BACKBONE
    from runtime.model.bundle import sha256_file

    long_wav = sorted((esc10 / "rooster").glob("*.wav"))[0]
    short_wav = shared_data / "fsdd" / "0" / "0_george_0.wav"
    clips = [SimpleNamespace(path=p, sha=sha256_file(p), duration_s=d) for p, d in ((long_wav, 5.0), (short_wav, 0.4))]
    fam = BackboneFamily(TrainOptions(data=tmp_path, out=tmp_path / "m", cache_dir=tmp_path / "cache"))
    fam.inputs = dataset_embeddings(clips, cache_dir=tmp_path / "cache")
    skip = 0.5 * BACKBONE.block_hop_seconds
    emb, levels = fam.shifted_copy(SimpleNamespace(items=clips), skip)
    assert len(emb[1]) == 0 and len(levels[1]) == 0 and emb[1].shape[1] == emb[0].shape[1]
    assert len(emb[0]) >= 2 and len(levels[0]) == len(emb[0])
    assert not np.allclose(emb[0][0], fam.inputs[0][0])
    # cached apart from the plain copy: a second call reads it back unchanged
    again, _ = fam.shifted_copy(SimpleNamespace(items=clips), skip)
    np.testing.assert_array_equal(again[0], emb[0])


def test_prepare_puts_the_shifted_copy_after_the_mixed_ones(esc10, tmp_path):
    """update_data records the mixed copy as copy 1 + len(gains): the shifted copy must come after it."""
    from types import SimpleNamespace

    from convert.families.backbone import MIXED_COPIES, BackboneFamily
    from convert.options import TrainOptions
    from runtime.model.bundle import sha256_file

    wavs = sorted((esc10 / "dog").glob("*.wav"))[:2]
    data = SimpleNamespace(items=[SimpleNamespace(path=p, sha=sha256_file(p), duration_s=5.0) for p in wavs])
    fam = BackboneFamily(TrainOptions(data=tmp_path, out=tmp_path / "m", cache_dir=tmp_path / "cache"))
    fam.shift_hops = (0.5,)
    fam.prepare(data)
    assert len(fam.augmented) == len(fam.levels) - 1 == len(fam.gains) + MIXED_COPIES + 1
    assert fam.augmented[len(fam.gains)] is fam.mixed[0]
    shifted, _ = fam.shifted_copy(data, 0.5 * fam.params.block_hop_seconds)
    for a, b in zip(fam.augmented[-1], shifted):
        np.testing.assert_array_equal(a, b)
    x, _, _ = fam.training_set([0, 1], np.array([0, 0]), n_labels=1)
    fam.shift_hops = ()
    fam.prepare(data)
    assert len(fam.training_set([0, 1], np.array([0, 0]), n_labels=1)[0]) < len(x)
