"""Open-set training end to end on real audio: the built-in negatives, the validation streams and the stream
defaults in the bundle; `train --update` with site background; the bad backgrounds and bundles it refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.cli.main import main
from tests.conftest import shared_path
from tests.convert.test_train import _one_line_error

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Two forest recordings of the test quarter-hours (never in the built-in set) as the site's background."""
    folder = tmp_path_factory.mktemp("site")
    for p in sorted(shared_path("soundscapes", "forest_24h").glob("*.wav"))[1::2][:2]:
        shutil.copyfile(p, folder / p.name)
    return folder


def test_train_calibrates_listen_on_validation_streams(model):
    from runtime.detect.events import PostSettings
    from runtime.model.bundle import load_bundle

    bundle = load_bundle(model)
    report = json.loads((model / "report.json").read_text())
    stream = report["stream"]
    v = stream["validation"]
    assert v["n_targets"] == 24 and v["n_distractors"] > 0 and v["duration_s"] > 60
    assert set(v["per_label"]) == set(bundle.labels) and 0.0 <= v["macro_event_f1"] <= 1.0
    # the stream defaults are the chosen ones, and listen starts from them (no 0.5 floor)
    assert bundle.stream["thresholds"] == stream["choice"]["thresholds"]
    settings = PostSettings.for_bundle(bundle)
    assert settings.smoothing == stream["choice"]["smoothing"]
    assert {label: settings.on_threshold(label) for label in bundle.labels} == stream["choice"]["thresholds"]
    assert bundle.meta["metrics"]["stream_validation"]["false_alarms_per_hour"] == v["false_alarms_per_hour"]
    # the negatives: the user's own clips of a built-in class are never trained against
    neg = stream["negatives"]
    dropped = neg["builtin_dropped"]
    assert {"dog", "rooster", "crying_baby"} <= set(dropped["a training clip"]["categories"])
    md = (model / "report.md").read_text()
    assert "## Streams: listen's defaults" in md and "false alarms per hour" in md
    assert (model / "training.npz").is_file()


def test_update_refits_the_head_with_site_background(model, site, cache, tmp_path, capsys):
    from runtime.model.bundle import load_bundle

    old = load_bundle(model)
    out = tmp_path / "site"
    assert main(["train", "--update", str(model), "--background", str(site), "--out", str(out), "--cache", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert "before the update" in printed and "validation streams" in printed
    new = load_bundle(out)
    assert new.stages[0].sha256 == old.stages[0].sha256  # the backbone is untouched
    assert new.labels == old.labels
    report = json.loads((out / "report.json").read_text())
    assert report["update"]["from"]["sha256"] == old.sha256
    files = [f["file"] for f in report["stream"]["negatives"]["background_files"]]
    assert sorted(files) == sorted(p.name for p in site.iterdir())
    assert "## Update (site adaptation)" in (out / "report.md").read_text()
    # an update of the update keeps the earlier background and adds the new one
    again = tmp_path / "again"
    more = tmp_path / "more"
    more.mkdir()
    shutil.copyfile(sorted(shared_path("soundscapes", "forest_24h").glob("*.wav"))[5], more / "later.wav")
    assert main(["train", "--update", str(out), "--background", str(more), "--out", str(again), "--cache", str(cache)]) == 0
    report = json.loads((again / "report.json").read_text())
    assert len(report["stream"]["negatives"]["background_files"]) == len(files) + 1


def test_bad_backgrounds_and_bundles_are_refused_in_one_line(model, data, esc10, tmp_path, capsys):
    from runtime.audio.wav import write_wav
    from runtime.model.bundle import load_bundle, write_bundle

    out = str(tmp_path / "x")
    update = ["train", "--update", str(model), "--out", out]
    assert "--update needs --background" in _one_line_error(capsys, update)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no audio files" in _one_line_error(capsys, update + ["--background", str(empty)])
    silent = tmp_path / "silent"
    silent.mkdir()
    write_wav(silent / "quiet.wav", np.zeros(16000 * 5, dtype=np.float32), 16000)
    assert "silent" in _one_line_error(capsys, update + ["--background", str(silent)])
    barking = tmp_path / "barking"
    barking.mkdir()
    for p in sorted((esc10 / "dog").glob("esc10_5-*.wav"))[:3]:  # dogs the model never saw, as "background"
        shutil.copyfile(p, barking / p.name)
    line = _one_line_error(capsys, update + ["--background", str(barking)])
    assert "sound like a label" in line and "esc10_5-" in line and "dog" in line
    old = load_bundle(model)
    meta = {k: v for k, v in old.meta.items() if k not in ("json_sha256", "files")}
    # a bundle without training data (made by `fieldear convert`, or by an older train)
    bare = tmp_path / "bare"
    write_bundle(bare, {p.name: p for p in model.iterdir() if p.name not in ("model.json", "training.npz")}, meta)
    assert "carries no training data" in _one_line_error(capsys, ["train", "--update", str(bare), "--out", out,
                                                                  "--background", str(empty)])
    # a bundle from another fieldear version
    meta["fieldear_version"] = "0.0.1"
    other = tmp_path / "other"
    write_bundle(other, {p.name: p for p in model.iterdir() if p.name != "model.json"}, meta)
    assert "made by fieldear 0.0.1" in _one_line_error(capsys, ["train", "--update", str(other), "--out", out,
                                                                "--background", str(empty)])
    assert "takes no DATA" in _one_line_error(capsys, ["train", str(data), "--update", str(model), "--out", out])
    assert not Path(out).exists()
