"""The small-CNN candidate end to end (few epochs), its BatchNorm setting, and the time-budget skip."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from runtime.cli.main import main
from tests.convert.test_train import _subset

pytestmark = pytest.mark.train

CLASSES = ("chainsaw", "rooster", "sea_waves")


def test_cnn_candidate_writes_a_single_stage_bundle(esc10, tmp_path):
    from convert.families.embed import clip_blocks
    from runtime.model.model import Model

    data = _subset(esc10, tmp_path / "data", classes=CLASSES, per_class=6)
    out = tmp_path / "cnn"
    code = main(["train", str(data), "--out", str(out), "--candidates", "cnn", "--cnn-epochs", "12",
                 "--folds", "2", "--time-budget", "900", "--seed", "0"])
    assert code == 0
    model = Model.load(out)
    assert [s.role for s in model.bundle.stages] == ["classifier"]
    assert model.params.sample_rate == 16000 and model.runners[0].input_shape == (1, 62, 64)
    assert model.runners[0].input_spec["dtype"] == "int8"
    meta = json.loads((out / "model.json").read_text())
    assert meta["metrics"]["candidate"].startswith("cnn")
    assert meta["metrics"]["quantization"]["n_clips"] == 18
    # trained on all 18 clips: it must know them far better than chance (1/3)
    correct = 0
    for label in CLASSES:
        for wav in sorted((data / label).glob("*.wav")):
            scores = model.pool(model.score_blocks(clip_blocks(wav, model.params)))
            correct += model.labels[int(np.argmax(scores))] == label
    assert correct / 18 >= 0.7


def test_batchnorm_momentum_is_0_9():
    from convert.families.cnn import CnnSpec, build_cnn

    spec = CnnSpec()
    model = build_cnn((62, 64), 4, spec, seed=0)
    bns = [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]
    assert bns and all(abs(layer.momentum - 0.9) < 1e-9 for layer in bns)
    assert 40_000 <= model.count_params() <= 80_000
    assert spec.start_from_epoch >= 5


def test_cnn_is_skipped_when_over_the_time_budget(esc10, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="convert.train")
    data = _subset(esc10, tmp_path / "data", classes=CLASSES, per_class=5)
    out = tmp_path / "m"
    assert main(["train", str(data), "--out", str(out), "--time-budget", "1", "--candidates", "backbone,cnn",
                 "--cache", str(tmp_path / "cache")]) == 0
    report = json.loads((out / "report.json").read_text())
    notes = {c["name"]: c.get("note", "") for c in report["candidates"]}
    assert "skipped" in notes["cnn"] and "time budget" in notes["cnn"]
    assert report["choice"]["name"].startswith("backbone")
