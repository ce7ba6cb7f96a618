"""The label-by-listening page: the clip list with spectrogram thumbnails (drawn with the project's frontend:
its newest bundle's, else the default bundle's), a player, label buttons and keys, many clips labelled at once,
class counts with train's warnings (``convert.data.dataset.count_warnings``)."""

from __future__ import annotations

import logging
import mimetypes
from pathlib import Path

from flask import current_app, jsonify, request, send_file

from convert.studio.projects import BACKGROUND_LABEL
from convert.studio.web import open_project, project_file, render, studio
from runtime.errors import DatasetError

log = logging.getLogger(__name__)

MAX_KEYED_LABELS = 9  # keys 1-9
THUMBNAIL_CACHE = 4096  # images kept per frontend (a few kB each)
MAX_LABELS_BODY = 8 << 20  # a label request names every selected clip: "select all" on a big project


def project_frontend(project) -> Path | None:
    """The bundle whose frontend draws the project's spectrograms: its newest trained one (``Project.versions``'s
    order, as the other pages), else None (the default bundle)."""
    return project.newest_bundle()


def spectrograms(project):
    """The (cached) SpectrogramCache for the project's frontend."""
    from runtime.audio.files import read_audio
    from runtime.web.spectrogram import MAX_CLIP_S, SpectrogramCache

    model = project_frontend(project)
    caches = current_app.config["STUDIO_SPECTROGRAMS"]
    key = str(model)
    if key not in caches:
        caches[key] = SpectrogramCache(model, size=THUMBNAIL_CACHE, in_process=True,
                                       reader=lambda p: read_audio(p, max_seconds=MAX_CLIP_S))
    return caches[key]


def count_summary(project) -> dict:
    """Clips per label, the unlabelled count, and train's warnings over the labels it would train on."""
    from convert.data.dataset import count_warnings

    counts = project.counts()
    trained = {k: v for k, v in counts.items() if k and k != BACKGROUND_LABEL}
    warnings = count_warnings(trained) if trained else []
    if 0 < len(trained) < 2:
        warnings.insert(0, "only one label so far: a classifier needs at least two (besides background)")
    return {"counts": {k: v for k, v in counts.items() if k}, "unlabelled": counts.get("", 0), "warnings": warnings}


@studio.get("/p/<project>/label")
def label_page(project: str):
    p = open_project(project)
    labels = p.labels()
    show = "unlabelled" if request.args.get("show") == "unlabelled" else "all"
    clips = [{"file": f, "label": lab} for f, lab in labels.items() if show == "all" or not lab]
    choices = sorted({lab for lab in labels.values() if lab and lab != BACKGROUND_LABEL})
    return render("studio/label.html", project=p, clips=clips, show=show, n_all=len(labels),
                  choices=choices, keyed=MAX_KEYED_LABELS, background=BACKGROUND_LABEL, summary=count_summary(p))


@studio.post("/api/p/<project>/labels")
def set_labels(project: str):
    """``{"files": [...], "label": "dog"}``: label them all ('' unlabels)."""
    p = open_project(project)
    request.max_content_length = MAX_LABELS_BODY  # the app's 64 kB would stop at about 2,000 names
    data = request.get_json(silent=True) or {}
    files, label = data.get("files"), data.get("label")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files) \
            or not isinstance(label, str):
        raise DatasetError("expected {\"files\": [names], \"label\": text}")
    p.set_label(files, label)
    return jsonify(files=files, label=label.strip(), **count_summary(p))


@studio.get("/p/<project>/audio/<name>")
def audio(project: str, name: str):
    path = project_file(open_project(project), name)
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return send_file(path, mimetype=mime, conditional=True, max_age=0)


@studio.get("/p/<project>/spectrogram/<name>")
def spectrogram(project: str, name: str):
    p = open_project(project)
    path = project_file(p, name)
    data = spectrograms(p).png(path)
    return current_app.response_class(data, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})
