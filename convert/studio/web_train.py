"""The train page (live progress of the project's ``fieldear train`` child, cancel) and the report page (the
reference layout, confusion, precision-recall curves with the threshold slider that saves into the bundle, the
candidates, int8 parity, stream metrics, the CV mistakes with their audio).

Job objects live in the app (``STUDIO_JOBS``), one per project and kind, so the server that started a child also
reaps it; a restarted server reads the state file in the project and finds the run again."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import abort, current_app, jsonify, request

from convert.studio.projects import BUNDLES_DIR, JOB_STATE_FILES, LABELS_CSV
from convert.studio.web import open_project, render, studio
from runtime.errors import DatasetError, FieldearError

log = logging.getLogger(__name__)

DEFAULT_TIME_BUDGET_S = 120.0


def project_job(project, kind: str):
    """The app's TrainJob, BatchJob or DeployJob of ``project`` (made on first use)."""
    from convert.studio.batch_job import BatchJob
    from convert.studio.deploy import DeployJob
    from convert.studio.train_job import TrainJob

    jobs = current_app.config.setdefault("STUDIO_JOBS", {})
    key = (kind, str(project.path))
    if key not in jobs:
        jobs[key] = {"train": TrainJob, "batch": BatchJob, "deploy": DeployJob}[kind](project)
    return jobs[key]


def start_job(project, kind: str, *args) -> dict:
    """Start the project's ``kind`` job under the project's lock, so a rename or delete (which hold it while they
    check for running jobs) cannot slip in between; a project renamed meanwhile is not found."""
    with project.lock:
        if not (project.path / LABELS_CSV).is_file():
            raise DatasetError(f"no project {project.name!r} any more", "it was renamed or deleted: open it again")
        return project_job(project, kind).start(*args)


def running_jobs(project) -> list[str]:
    """The project's jobs running now, e.g. ["training v2", "deploy 3 of v1"]."""
    found = []
    for kind in JOB_STATE_FILES:
        state = project_job(project, kind).job.running()
        if state is not None:
            found.append({"train": f"training {state.get('version')}", "batch": f"batch {state.get('number')}",
                          "deploy": f"deploy of {state.get('version')} to {state.get('host')}"}[kind])
    return found


def bundle_dir(project, version: str | None) -> Path:
    """bundles/<version> (the newest when None), or 404."""
    versions = project.versions()
    if not versions:
        abort(404)
    version = version or versions[0]
    if version not in versions:
        abort(404)
    return project.path / BUNDLES_DIR / version


def _number(form: dict, key: str, kind, default, low, high):
    raw = form.get(key, default)
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise FieldearError(f"{key.replace('_', ' ')} must be a number (got {raw!r})") from None
    if not low <= value <= high:
        raise FieldearError(f"{key.replace('_', ' ')} must be between {low} and {high} (got {value})")
    return value


# ---------------------------------------------------------------- train


@studio.get("/p/<project>/train")
def train_page(project: str):
    p = open_project(project)
    return render("studio/train.html", project=p, state=project_job(p, "train").state(), versions=p.versions(),
                  default_budget=DEFAULT_TIME_BUDGET_S)


@studio.get("/api/p/<project>/train")
def train_state(project: str):
    p = open_project(project)
    return jsonify(state=project_job(p, "train").state(), versions=p.versions())


@studio.post("/api/p/<project>/train")
def train_start(project: str):
    from convert.studio.train_job import TrainSettings

    p = open_project(project)
    form = request.get_json(silent=True) or {}
    settings = TrainSettings(seed=_number(form, "seed", int, 0, 0, 2**31 - 1),
                             time_budget=_number(form, "time_budget", float, DEFAULT_TIME_BUDGET_S, 1, 24 * 3600),
                             folds=_number(form, "folds", int, 5, 2, 20),
                             cache_dir=current_app.config.get("STUDIO_TRAIN_CACHE"))
    return jsonify(state=start_job(p, "train", settings)), 202


@studio.post("/api/p/<project>/train/cancel")
def train_cancel(project: str):
    p = open_project(project)
    return jsonify(state=project_job(p, "train").cancel())


# ---------------------------------------------------------------- report


@studio.get("/p/<project>/report")
def report_page(project: str):
    p = open_project(project)
    versions = p.versions()
    if not versions:
        return render("studio/report.html", project=p, view=None, versions=[])
    from convert.studio.report import report_view

    bundle = bundle_dir(p, request.args.get("version"))
    return render("studio/report.html", project=p, view=report_view(bundle, set(p.labels())), versions=versions)


@studio.get("/api/p/<project>/report/<version>")
def report_json(project: str, version: str):
    from convert.studio.report import report_view

    p = open_project(project)
    return jsonify(report_view(bundle_dir(p, version), set(p.labels())))


@studio.post("/api/p/<project>/report/<version>/thresholds")
def save_thresholds(project: str, version: str):
    from convert.studio.report import save_thresholds as save

    p = open_project(project)
    if project_job(p, "train").job.running() is not None and project_job(p, "train").state()["version"] == version:
        raise FieldearError(f"{version} is still training")
    thresholds = (request.get_json(silent=True) or {}).get("thresholds")
    if not isinstance(thresholds, dict):
        raise FieldearError("expected {\"thresholds\": {label: value}}")
    return jsonify(thresholds=save(bundle_dir(p, version), thresholds))
