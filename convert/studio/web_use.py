"""Using a trained bundle from the studio: the online test (an uploaded or browser-recorded clip scored with the
runtime's predict code, and its spectrogram), the batch page (``fieldear batch`` over a folder as a job, a table,
the CSV, evaluate's metrics) and the deploy page (the bundle as a download; ``fieldear deploy``'s code)."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import abort, current_app, jsonify, request, send_file, url_for

from convert.studio.web import open_project, render, studio
from convert.studio.web_train import bundle_dir, project_job, start_job
from runtime.errors import FieldearError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- online test


@studio.get("/p/<project>/test")
def online_page(project: str):
    p = open_project(project)
    return render("studio/online.html", project=p, versions=p.versions(),
                  max_upload_mb=current_app.config["STUDIO_MAX_UPLOAD"] // (1024 * 1024))


@studio.post("/api/p/<project>/test/<version>")
def online_test(project: str, version: str):
    """The request body is the clip (``?name=`` its file name); the answer is the prediction and its spectrogram."""
    from convert.studio.online import score_clip, store_clip

    p = open_project(project)
    bundle = bundle_dir(p, version)
    limit = current_app.config["STUDIO_MAX_UPLOAD"]
    if (request.content_length or 0) > limit:
        raise FieldearError(f"the clip is over the upload limit of {limit // (1024 * 1024)} MB", "test a shorter clip")
    request.max_content_length = limit
    clip = store_clip(p, request.args.get("name", ""), request.stream, limit)
    out = score_clip(bundle, clip)
    out["spectrogram"] = url_for("studio.online_spectrogram", project=p.name, name=clip.name)
    out["audio"] = url_for("studio.online_audio", project=p.name, name=clip.name)
    return jsonify(out)


def _online_path(project, name: str) -> Path:
    from convert.studio.online import online_clip

    try:
        return online_clip(project, name)
    except FieldearError:
        abort(404)


@studio.get("/p/<project>/test/clip/<name>/spectrogram.png")
def online_spectrogram(project: str, name: str):
    from convert.studio.web_label import spectrograms

    p = open_project(project)
    data = spectrograms(p).png(_online_path(p, name))
    return current_app.response_class(data, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})


@studio.get("/p/<project>/test/clip/<name>")
def online_audio(project: str, name: str):
    import mimetypes

    path = _online_path(open_project(project), name)
    return send_file(path, mimetype=mimetypes.guess_type(path.name)[0] or "application/octet-stream", max_age=0)


# ---------------------------------------------------------------- batch


@studio.get("/p/<project>/batch")
def batch_page(project: str):
    p = open_project(project)
    return render("studio/batch.html", project=p, versions=p.versions(), state=project_job(p, "batch").state())


def _batch_json(p, state: dict | None) -> dict:
    if state is not None and state.get("status") == "done":
        state["csv"] = url_for("studio.batch_csv", project=p.name, number=state["number"])
    return {"state": state}


@studio.get("/api/p/<project>/batch")
def batch_state(project: str):
    p = open_project(project)
    return jsonify(_batch_json(p, project_job(p, "batch").state()))


@studio.post("/api/p/<project>/batch")
def batch_start(project: str):
    from convert.studio.batch_job import BatchSettings

    p = open_project(project)
    form = request.get_json(silent=True) or {}
    folder = str(form.get("folder", "")).strip()
    if not folder or not Path(folder).is_absolute():
        raise FieldearError("give the folder as an absolute path on this computer", "e.g. /home/me/test-clips")
    settings = BatchSettings(folder=Path(folder), version=str(form.get("version") or (p.versions() or [""])[0]),
                             truth=str(form.get("truth", "prefix")))
    return jsonify(_batch_json(p, start_job(p, "batch", settings))), 202


@studio.post("/api/p/<project>/batch/cancel")
def batch_cancel(project: str):
    p = open_project(project)
    return jsonify(_batch_json(p, project_job(p, "batch").cancel()))


@studio.get("/p/<project>/batch/batch-<int:number>.csv")
def batch_csv(project: str, number: int):
    from convert.studio.projects import REPORTS_DIR

    path = open_project(project).path / REPORTS_DIR / f"batch-{number}.csv"
    if not path.is_file():
        abort(404)
    return send_file(path, mimetype="text/csv", as_attachment=True, download_name=path.name, max_age=0)


# ---------------------------------------------------------------- deploy


@studio.get("/p/<project>/deploy")
def deploy_page(project: str):
    p = open_project(project)
    return render("studio/deploy.html", project=p, versions=p.versions(), state=project_job(p, "deploy").state())


@studio.get("/api/p/<project>/deploy")
def deploy_state(project: str):
    p = open_project(project)
    return jsonify(state=project_job(p, "deploy").state())


@studio.post("/api/p/<project>/deploy")
def deploy_start(project: str):
    """``{"host": "pi@field-01.local", "version": "v2", "dry_run": false}``: start `fieldear deploy` as a job."""
    from convert.studio.deploy import DeploySettings

    p = open_project(project)
    form = request.get_json(silent=True) or {}
    settings = DeploySettings(host=str(form.get("host", "")), dry_run=bool(form.get("dry_run")),
                              **current_app.config.get("STUDIO_DEPLOY", {}))
    version = str(form.get("version") or (p.versions() or [""])[0])
    return jsonify(state=start_job(p, "deploy", version, settings)), 202


@studio.get("/p/<project>/deploy/<version>.tar.gz")
def bundle_download(project: str, version: str):
    import io

    from convert.studio.deploy import bundle_archive

    p = open_project(project)
    name = f"{p.name.replace(' ', '_')}-{version}"
    data = bundle_archive(bundle_dir(p, version), name)
    return send_file(io.BytesIO(data), mimetype="application/gzip", as_attachment=True, download_name=f"{name}.tar.gz")
