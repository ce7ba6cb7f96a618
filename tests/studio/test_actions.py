"""The studio's online test, batch job and deploy on a real bundle trained from a small ESC-10 project."""

from __future__ import annotations

import csv
import io
import shutil
import tarfile
import time

import pytest

from convert.studio.batch_job import BatchJob, BatchSettings
from convert.studio.deploy import DeployJob, DeploySettings, bundle_archive, deploy_argv
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


def wait_for_job(job, state: dict, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while state["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        state = job.state()
    return state


def test_download_and_deploy_as_a_job(trained_project, tmp_path):
    import sys

    bundle = trained_project.path / "bundles" / "v1"
    data = bundle_archive(bundle, "small-v1")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert "small-v1/model.json" in names and "small-v1/head.tflite" in names
    settings = DeploySettings(host="pi@field-01.local", dry_run=True, extra={"sudo": False, "check_tries": 2})
    assert deploy_argv(bundle, settings) == [  # the command a person would type
        sys.executable, "-m", "runtime.cli", "deploy", "pi@field-01.local", "--model", str(bundle), "--ssh-command",
        "ssh", "--rsync-command", "rsync", "--no-sudo", "--check-tries", "2", "--dry-run"]
    with pytest.raises(FieldearError, match="not a device address"):
        deploy_argv(bundle, DeploySettings(host="-oProxyCommand=x"))

    job = DeployJob(trained_project)
    state = job.start("v1", DeploySettings(host="pi@field-01.local", dry_run=True))
    assert state["status"] == "running" and state["number"] == 1
    with pytest.raises(FieldearError, match="already running"):
        job.start("v1", DeploySettings(host="pi@field-01.local", dry_run=True))
    state = wait_for_job(job, state)
    assert state["status"] == "done", state["log_tail"]
    assert any("rsync -a --delete -e ssh" in line for line in state["log_tail"])  # the plan, in the log
    assert DeployJob(trained_project).state()["status"] == "done"  # a restarted server reads it again

    # a device that cannot be reached: failed, and the log says why
    unreachable = tmp_path / "ssh-unreachable"
    unreachable.write_text("#!/bin/sh\necho 'ssh: connect to host field-01.local port 22: No route to host' >&2\n"
                           "exit 255\n")
    unreachable.chmod(0o755)
    state = wait_for_job(job, job.start("v1", DeploySettings(host="pi@field-01.local", ssh_command=str(unreachable))))
    assert (state["status"], state["number"], state["dry_run"]) == ("failed", 2, False)
    assert any("No route to host" in line for line in state["log_tail"]), state["log_tail"]


def test_deploy_verdict_without_an_exit_status(tmp_path):
    """A server restarted during a deploy reads the verdict from the log (no exit status of a child not its own)."""
    from convert.studio.deploy import _deployed

    log = tmp_path / "deploy-1.log"
    cases = [("deploy: restart the service\ndeployed v1-abc to pi@x: healthy\n", False, True),
             ("deploy: restart the service\ndeploy of v1 to pi@x FAILED the health check; rolled back\n", False, False),
             ("+ ssh pi@x 'mkdir -p /tmp'\n# if the health check fails:\n+ ssh pi@x rollback\n# if it passes:\n"
              "+ ssh pi@x cleanup\n", True, True),
             ("fieldear deploy: error: no bundle\n", True, False)]
    for text, dry_run, verdict in cases:
        log.write_text(text)
        assert _deployed({"log": str(log), "dry_run": dry_run}, None) is verdict, text
        assert _deployed({"log": str(log), "dry_run": dry_run}, 0) is True
        assert _deployed({"log": str(log), "dry_run": dry_run}, 1) is False
