"""The studio's online test, batch job and deploy on a real bundle trained from a small ESC-10 project."""

from __future__ import annotations

import csv
import io
import shutil
import tarfile
import time

import pytest

from convert.studio.batch_job import BatchJob, BatchSettings
from convert.studio.deploy import DeploySettings, bundle_archive, deploy_bundle
from convert.studio.online import online_clip, score_clip, store_clip
from runtime.errors import FieldearError

pytestmark = pytest.mark.train


def test_online_test_scores_like_predict(trained_project, esc10):
    from runtime.model.model import Model
    from runtime.predict.predict import predict_file

    bundle = trained_project.path / "bundles" / "v1"
    source = sorted((esc10 / "rooster").glob("*.wav"))[-1]  # not one of the training clips
    with open(source, "rb") as f:
        stored = store_clip(trained_project, source.name, f, max_bytes=10 << 20)
    assert online_clip(trained_project, stored.name) == stored
    out = score_clip(bundle, stored)
    direct = predict_file(Model.load(bundle), source)
    assert out["top"][0]["label"] == direct.label and out["scores"]["rooster"] == pytest.approx(
        float(direct.scores[direct.labels.index("rooster")]), abs=1e-6)
    with pytest.raises(FieldearError, match="not an audio file"):
        store_clip(trained_project, "notes.txt", io.BytesIO(b"hello"), max_bytes=100)
    with pytest.raises(FieldearError, match="bigger than"):
        store_clip(trained_project, "big.wav", io.BytesIO(b"x" * 3000), max_bytes=2048)
    with pytest.raises(FieldearError):
        online_clip(trained_project, "../labels.csv")


def test_batch_job_rows_are_fieldear_batch_rows_and_evaluate_scores_them(trained_project, esc10, tmp_path):
    from runtime.cli.main import main
    from runtime.evaluate.clip_eval import evaluate

    folder = tmp_path / "clips"
    for label in ("dog", "rooster"):
        (folder / label).mkdir(parents=True)
        for f in sorted((esc10 / label).glob("*.wav"))[-3:]:
            shutil.copyfile(f, folder / label / f.name)
    (folder / "dog" / "notes.txt").write_text("not audio")
    job = BatchJob(trained_project)
    with pytest.raises(FieldearError, match="no bundle"):
        job.start(BatchSettings(folder=folder, version="v9"))
    state = job.start(BatchSettings(folder=folder, version="v1", truth="folder"))
    assert state["total"] == 6
    deadline = time.monotonic() + 120
    while state["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.3)
        state = job.state()
    assert state["status"] == "done", state["log_tail"]
    assert state["done_files"] == 6 and len(state["rows"]) == 6
    cli = tmp_path / "cli.csv"
    assert main(["batch", str(folder), "--out", str(cli), "--model", str(trained_project.path / "bundles" / "v1")]) == 0
    with open(cli, newline="") as f:
        expected = list(csv.DictReader(f))
    assert list(state["rows"][0]) == list(expected[0])  # the same columns as `fieldear batch`
    assert [r["label"] for r in state["rows"]] == [r["label"] for r in expected]
    ev = evaluate(cli, truth="folder", model_dir=str(trained_project.path / "bundles" / "v1")).to_dict()
    assert state["evaluation"]["report"] == ev["report"] and state["evaluation"]["n_evaluated"] == 6


def test_download_and_dry_run_deploy(trained_project):
    bundle = trained_project.path / "bundles" / "v1"
    data = bundle_archive(bundle, "small-v1")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert "small-v1/model.json" in names and "small-v1/head.tflite" in names
    calls = []
    res = deploy_bundle(bundle, DeploySettings(host="pi@field-01.local", dry_run=True),
                        run=lambda *a, **k: calls.append(a))
    assert calls == [] and res["deployed"]
    assert any("rsync -a --delete -e ssh" in line for line in res["plan"])
    with pytest.raises(FieldearError, match="not a device address"):
        deploy_bundle(bundle, DeploySettings(host="-oProxyCommand=x"))
