"""The import page: files or folders dropped into the browser (one upload request per file, the body streamed to
disk inside the project), or a folder on the server's disk. Every file goes through
``Project.import_files`` (train's ``check_file``): problems and duplicates come back beside each file."""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

from flask import current_app, jsonify, request

from convert.studio.web import open_project, render, studio
from runtime.errors import DatasetError

log = logging.getLogger(__name__)

INCOMING_DIR = ".incoming"  # uploads land here (inside the project) while they are checked
CHUNK = 1 << 20
MB = 1024 * 1024


def imported_json(result, source: str | None = None, label: str | None = None) -> dict:
    return {"source": source if source is not None else result.source, "stored": result.stored,
            "problem": result.problem, "duplicate_of": result.duplicate_of, "label": label}


def folder_label(relative: str) -> str | None:
    """The label a file's folders give it, as train reads ``DATA/<label>/...``: for ``chosen/dog/x.wav`` the
    folder below the chosen (dropped, picked) one, for ``dog/x.wav`` the chosen folder itself; None without one."""
    folders = [p for p in relative.replace("\\", "/").split("/")[:-1] if p not in ("", ".")]
    if not folders:
        return None
    return folders[1] if len(folders) >= 2 else folders[0]


def label_by_folder(project, results, relatives: list[str]) -> list[str | None]:
    """Label each imported file by its folder (:func:`folder_label`); the labels given (None: none usable)."""
    by_label: dict[str, list[str]] = {}
    given = []
    for result, relative in zip(results, relatives):
        label = folder_label(relative) if result.stored else None
        if label is not None and ("," in label or label.startswith(".")):
            label = None  # not a usable label: left unlabelled, the row says so
        if label is not None:
            by_label.setdefault(label, []).append(result.stored)
        given.append(label)
    for label, files in by_label.items():
        project.set_label(files, label)
    return given


def upload_name(name: str) -> str:
    """The file name part of what the browser sent (a folder drop sends ``folder/sub/file.wav``)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or base in (".", "..") or base.startswith(".") or "\x00" in base:
        raise DatasetError(f"{name!r} is not a usable file name", "rename the file")
    return base


@studio.get("/p/<project>/import")
def import_page(project: str):
    p = open_project(project)
    return render("studio/import.html", project=p, max_upload_mb=current_app.config["STUDIO_MAX_UPLOAD"] // MB,
                  n_clips=len(p.labels()))


@studio.post("/api/p/<project>/upload")
def upload(project: str):
    """One file as the request body (``?name=`` its browser name, with its folders for a folder drop), streamed
    to disk, then checked and imported; ``?by_folder=1`` labels it by its folder."""
    p = open_project(project)
    sent = request.args.get("name", "")
    limit = current_app.config["STUDIO_MAX_UPLOAD"]
    length = request.content_length
    if length is None:
        return jsonify(error="an upload needs a Content-Length", source=sent), 411
    if length > limit:
        log.warning("refused an upload of %d bytes into %s (limit %d)", length, p.name, limit)
        return jsonify(error=f"{sent or 'the file'} is {length / MB:,.0f} MB, over the upload limit of "
                       f"{limit / MB:,.0f} MB", hint="import it with 'import from a folder on disk' instead",
                       source=sent), 413
    name = upload_name(sent)
    request.max_content_length = limit
    incoming = p.path / INCOMING_DIR / uuid.uuid4().hex
    incoming.mkdir(parents=True)
    try:
        target = incoming / name
        with open(target, "wb") as f:
            shutil.copyfileobj(request.stream, f, CHUNK)
        got = target.stat().st_size
        if got != length:
            raise DatasetError(f"{sent}: the upload was cut short ({got} of {length} bytes)", "send it again")
        results = p.import_files([target])
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    labels = label_by_folder(p, results, [sent]) if request.args.get("by_folder") == "1" else [None]
    return jsonify(results=[imported_json(r, sent, lab) for r, lab in zip(results, labels)], counts=p.counts())


@studio.post("/api/p/<project>/import-folder")
def import_folder(project: str):
    """Every file under a folder on this machine's disk (an absolute path; ``~`` is expanded); with
    ``"by_folder": true`` each labelled by its folder."""
    p = open_project(project)
    body = request.get_json(silent=True) or {}
    given = str(body.get("path", "")).strip()
    folder = Path(given).expanduser()
    if not given or not folder.is_absolute():
        raise DatasetError(f"{given!r} is not an absolute path", "give the folder's full path, e.g. /home/me/recordings")
    folder = folder.resolve()
    if not folder.is_dir():
        raise DatasetError(f"{given}: no such folder on this machine", "check the path")
    if folder.is_relative_to(p.path.resolve()):
        raise DatasetError(f"{given} is inside the project itself", "import from a folder outside the project")
    results = p.import_files([folder])
    if not results:
        raise DatasetError(f"{given}: no files in that folder")
    relatives = [str(Path(r.source).relative_to(folder)) for r in results]
    labels = (label_by_folder(p, results, [f"{folder.name}/{rel}" for rel in relatives]) if body.get("by_folder")
              else [None] * len(results))
    return jsonify(results=[imported_json(r, rel, lab) for r, rel, lab in zip(results, relatives, labels)],
                   counts=p.counts())
