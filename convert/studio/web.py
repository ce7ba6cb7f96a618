"""The studio's pages (issue 14): the Flask blueprint ``studio`` under ``/studio``, served by `fieldear serve
--projects DIR` beside (or instead of) the device review pages.

``runtime.web.app.create_app`` calls :func:`register_studio` only when projects are configured, so the train
extra (TensorFlow for the train page, numpy for imports) is imported only then. The same app rules apply: login
when a password is set, a CSRF token on every POST, GET never changes anything, security headers. Every file name
a request names is looked up in the project's ``labels.csv`` and resolved inside its ``audio/`` folder
(:func:`project_file`), so ``../`` or an absolute path is "not found".

Pages live in modules listed in :data:`PAGE_MODULES` (each adds routes to :data:`studio`); a project's pages are
linked from :data:`PROJECT_NAV`. Templates are under ``convert/studio/templates/studio/`` (each extends
``studio/base.html``), the script and stylesheet under ``convert/studio/static/`` (``url_for('studio.static',
filename=...)``). JSON endpoints live under ``/studio/api/`` (errors come back as JSON there).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from runtime.errors import FieldearError

log = logging.getLogger(__name__)

STUDIO_DIR = Path(__file__).resolve().parent
PAGE_MODULES = ("convert.studio.web_import", "convert.studio.web_label", "convert.studio.web_train",
                "convert.studio.web_use")
# (endpoint, title) of the pages of one project, in the order of its tabs; each takes a ``project`` argument
PROJECT_NAV = (("studio.import_page", "Import"), ("studio.label_page", "Label"), ("studio.train_page", "Train"),
               ("studio.report_page", "Report"), ("studio.online_page", "Test"), ("studio.batch_page", "Batch"),
               ("studio.deploy_page", "Deploy"))
MAX_UPLOAD_MB = 512  # one uploaded file; bigger ones are refused before a byte is read

studio = Blueprint("studio", __name__, template_folder=str(STUDIO_DIR / "templates"),
                   static_folder=str(STUDIO_DIR / "static"), static_url_path="/static")


def register_studio(app, root: Path, max_upload_mb: float = MAX_UPLOAD_MB) -> None:
    """Add the studio over the projects root ``root`` to ``app`` (under /studio)."""
    from convert.studio.projects import Projects

    for name in PAGE_MODULES:
        importlib.import_module(name)
    app.config.update(STUDIO_PROJECTS=Projects(root), STUDIO_MAX_UPLOAD=int(max_upload_mb * 1024 * 1024),
                      STUDIO_SPECTROGRAMS={})
    app.register_blueprint(studio, url_prefix="/studio")
    log.info("studio: projects in %s", root)


def projects():
    """The app's ``convert.studio.projects.Projects``."""
    return current_app.config["STUDIO_PROJECTS"]


def open_project(name: str):
    """The project ``name`` (a ``Project``), or 404."""
    from convert.studio.projects import check_name

    try:
        check_name(name)
        return projects().get(name)
    except FieldearError:
        abort(404)


def project_file(project, name: str) -> Path:
    """The imported file ``name`` of ``project`` (a name in its labels.csv, inside audio/), or 404."""
    if not name or "/" in name or "\\" in name or "\x00" in name or name not in project.labels():
        abort(404)
    root = project.audio.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        abort(404)
    return path


def render(template: str, project=None, **kw):
    """A studio page: ``template`` under templates/studio/, with the header nav, the project and its tabs."""
    from runtime.web.app import current_settings
    from runtime.web.pages import nav_for

    settings = current_settings()
    return render_template(template, nav=nav_for(settings), device=settings.db, root=projects().root,
                           project=project, project_nav=PROJECT_NAV, **kw)


def back(endpoint: str, message: str | None = None, error: FieldearError | None = None, **values):
    """Redirect after a form POST, with a flashed message (or the error and its hint)."""
    if error is not None:
        flash(f"{error.message}" + (f" ({error.hint})" if error.hint else ""), "error")
    elif message:
        flash(message, "ok")
    return redirect(url_for(endpoint, **values))


# ---------------------------------------------------------------- the projects page


def project_summary(project) -> dict:
    counts = project.counts()
    n = sum(counts.values())
    return {"name": project.name, "clips": n, "unlabelled": counts.get("", 0),
            "labels": sorted(k for k in counts if k)}


@studio.get("/", endpoint="projects")  # the header link (runtime.web.pages.STUDIO_NAV)
def projects_page():
    rows = [project_summary(projects().get(name)) for name in projects().names()]
    return render("studio/projects.html", rows=rows)


@studio.post("/projects")
def create_project():
    name = request.form.get("name", "")
    try:
        project = projects().create(name)
    except FieldearError as exc:
        return back("studio.projects", error=exc)
    return back("studio.import_page", f"created project {project.name!r}", project=project.name)


def check_idle(project, doing: str) -> None:
    """Refuse to rename or delete a project while one of its jobs runs: a job's state and child use the
    project's folder (its bundle, log and progress paths are absolute)."""
    from convert.studio.web_train import running_jobs

    busy = running_jobs(project)
    if busy:
        raise FieldearError(f"not {doing} {project.name!r} while a job runs in it: {', '.join(busy)}",
                            "wait for it to end (or cancel it on its page), then try again")


@studio.post("/p/<project>/rename")
def rename_project(project: str):
    p = open_project(project)
    try:
        with p.lock:  # the jobs start under it (web_train.start_job): none can start between check and rename
            check_idle(p, "renaming")
            renamed = projects().rename(project, request.form.get("new_name", ""))
    except FieldearError as exc:
        return back("studio.projects", error=exc)
    return back("studio.projects", f"renamed {project!r} to {renamed.name!r}")


@studio.post("/p/<project>/delete")
def delete_project(project: str):
    p = open_project(project)
    try:
        with p.lock:
            check_idle(p, "deleting")
            projects().delete(project, request.form.get("confirm", ""))
    except FieldearError as exc:
        return back("studio.projects", error=exc)
    return back("studio.projects", f"deleted project {project!r}")


@studio.get("/p/<project>")
def project_home(project: str):
    p = open_project(project)
    return redirect(url_for("studio.label_page" if p.labels() else "studio.import_page", project=p.name))
