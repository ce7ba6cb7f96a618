"""The studio's train job: the real `fieldear train` in a child process, its progress, one at a time, cancel, and
a server restart finding the run again."""

from __future__ import annotations

import os
import time

import pytest

from convert.studio.train_job import TrainJob, TrainSettings, progress_from
from runtime.errors import FieldearError

pytestmark = pytest.mark.train


def wait_for(job: TrainJob, done, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job.state()
        if done(state):
            return state
        time.sleep(0.3)
    pytest.fail(f"timed out; last state {job.state()}")


def test_train_runs_once_at_a_time_shows_progress_and_a_new_server_finds_it(project, cache):
    from runtime.model.bundle import load_bundle

    settings = TrainSettings(seed=3, time_budget=20, folds=3, cache_dir=cache)
    job = TrainJob(project)
    state = job.start(settings)
    assert state["status"] == "running" and state["version"] == "v1"
    assert state["argv"][state["argv"].index("--seed") + 1] == "3"
    with pytest.raises(FieldearError, match="already training v1"):
        job.start(settings)
    with pytest.raises(FieldearError, match="already training"):
        TrainJob(project).start(settings)  # another server (or page) on the same project
    seen = []
    state = wait_for(job, lambda s: seen.append(s.get("progress")) or s["status"] != "running")
    assert state["status"] == "done", state["log_tail"]
    stages = [p["stage"] for p in seen if p]
    folds = {(p["fold"], p["folds"]) for p in seen if p and p["stage"] == "cross-validation" and p["fold"]}
    assert "cross-validation" in stages and folds <= {(1, 3), (2, 3), (3, 3)} and folds
    assert [p["candidate"] for p in seen if p and p["stage"] == "cross-validation"][-1] == "backbone"
    bundle = load_bundle(project.path / "bundles" / "v1")
    assert bundle.labels == ["dog", "rooster"]
    assert (project.path / "reports" / "train-v1.log").read_text().strip()
    # a restarted server (a new TrainJob, not the child's parent) reads the finished run from the project
    again = TrainJob(project).state()
    assert again["status"] == "done" and again["version"] == "v1"
    assert TrainJob(project).start(settings)["version"] == "v2"
    TrainJob(project).cancel()


def test_cancel_stops_the_process_group_and_removes_the_partial_bundle(project, cache):
    job = TrainJob(project)
    state = job.start(TrainSettings(time_budget=20, folds=3, cache_dir=cache))
    wait_for(job, lambda s: s["status"] != "running" or (s["progress"] or {}).get("stage") not in (None, "starting"))
    fresh = TrainJob(project)  # the cancel comes from a page served by a restarted server
    cancelled = fresh.cancel()
    assert cancelled["status"] == "cancelled"
    job.state()  # the child's parent reaps it
    with pytest.raises(ProcessLookupError):
        os.killpg(state["pid"], 0)
    assert not (project.path / "bundles" / "v1").exists()
    assert not list((project.path / "bundles").glob(".v1.tmp-*"))
    assert job.state()["status"] == "cancelled"
    with pytest.raises(FieldearError, match="no training is running"):
        job.cancel()


def test_progress_from_train_lines():
    t = 1000.0
    lines = ["dataset: 12 clips, 2 labels", "12 clips, 2 labels; CV: stratified",
             "candidate backbone: about 30 s (60 s of the budget left)", "embeddings: 12 clips, 36 blocks",
             "CV logreg(C=0.01): fold 2/3"]
    records = [{"t": t + i, "level": "INFO", "message": m} for i, m in enumerate(lines)]
    records.append({"t": t + 5, "level": "WARNING", "message": "fold 1 holds no validation clip of dog"})
    p = progress_from(records, now=t + 12, time_budget=60)
    assert (p["stage"], p["candidate"], p["setting"], p["fold"], p["folds"]) == (
        "cross-validation", "backbone", "logreg(C=0.01)", 2, 3)
    assert p["budget_left_s"] == 50.0  # 60 s left at t+2, 10 s later
    assert (p["estimate_s"], p["estimate_left_s"]) == (30.0, 20.0)  # train's estimate: about 30 s from t+2
    late = progress_from(records, now=t + 40, time_budget=60)  # slower than train's estimate: unknown, not 0 s
    assert (late["estimate_left_s"], late["budget_left_s"]) == (None, 22.0)
    assert progress_from(records, now=t + 90, time_budget=60)["budget_left_s"] == 0.0  # used up
    assert p["warnings"] == ["fold 1 holds no validation clip of dog"]
    records.append({"t": t + 20, "level": "INFO", "message": "chosen: backbone+logreg(C=0.01)/mean (best)"})
    records.append({"t": t + 21, "level": "INFO", "message": "int8 fold 1/3: 4 validation clips scored"})
    p = progress_from(records, now=t + 22, time_budget=60)
    assert (p["stage"], p["chosen"], p["fold"], p["budget_left_s"], p["estimate_left_s"]) == (
        "int8 check", "backbone+logreg(C=0.01)/mean", 1, None, None)
