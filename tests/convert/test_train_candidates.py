"""Every head candidate of the backbone family trains into a bundle that the runtime runs: `fieldear predict` on the
bundle's int8 stages gives the clip scores the training's own int8 model gives, and mostly the right label."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convert.families.backbone import HEAD_SPECS
from convert.families.heads import HeadSpec

pytestmark = pytest.mark.train


def test_head_specs_round_trip_through_model_json_settings():
    for spec in HEAD_SPECS:
        assert HeadSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert any(s.kind == "ensemble" for s in HEAD_SPECS)


ONE_OF_EACH_KIND = list({s.kind: s for s in reversed(HEAD_SPECS)}.values())


@pytest.mark.parametrize("spec", ONE_OF_EACH_KIND, ids=lambda s: s.name)
def test_each_candidate_trains_a_bundle_that_predict_runs(spec, data, cache, tmp_path, monkeypatch, capsys):
    from runtime.cli.main import main
    from runtime.model.model import Model

    monkeypatch.setattr("convert.families.backbone.HEAD_SPECS", (spec,))
    out = tmp_path / "bundle"
    assert main(["train", str(data), "--out", str(out), "--cache", str(cache), "--folds", "4", "--seed", "0"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["metrics"]["candidate"].startswith(f"backbone+{spec.name}/")
    assert HeadSpec.from_dict(meta["training"]["setting"]) == spec
    assert [s["role"] for s in meta["stages"]] == ["embedding", "classifier"]

    wavs = sorted(data.glob("*/*.wav"))[::3]
    capsys.readouterr()
    assert main(["predict", "--model", str(out), "--json", *map(str, wavs)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(rows) == len(wavs)
    model = Model.load(out)
    from convert.families.embed import clip_blocks

    right = 0
    for wav, row in zip(wavs, rows):
        want = model.pool(model.score_blocks(clip_blocks(wav, model.params)))
        got = np.array([row["scores"][label] for label in model.labels])
        assert np.abs(got - want).max() < 1e-5  # predict runs the bundle's stages, nothing else
        right += model.labels[int(np.argmax(got))] == wav.parent.name
    assert right / len(wavs) >= 0.75  # training clips of 3 labels: chance is 1/3
