"""The JSON API under ``/api/`` (documented in docs/web.md): events, clips, spectrograms, reviews, status,
counts, health. GET never changes anything; POST needs the CSRF token (``X-CSRF-Token``, from ``/api/csrf``)."""

from __future__ import annotations

import logging

from flask import Blueprint, abort, current_app, jsonify, request, send_file

from runtime.errors import FieldearError
from runtime.web.app import csrf_token, current_settings, db

log = logging.getLogger(__name__)

api = Blueprint("api", __name__)

MAX_LIMIT = 500
EVENT_FIELDS = ("id", "label", "start_utc", "end_utc", "start_s", "end_s", "peak", "mean", "model_sha", "device_id",
                "source", "verdict", "review_label", "reviewer", "reviewed_utc")


def event_filter(args):
    """An EventFilter from query parameters (label, day, min_score, review, limit, offset)."""
    import re

    from runtime.store.queries import EventFilter

    def number(name, kind, default=None):
        text = (args.get(name) or "").strip()
        if not text:
            return default
        try:
            return kind(text)
        except ValueError:
            raise FieldearError(f"{name}: not a number: {text!r}") from None

    day = (args.get("day") or "").strip() or None
    if day is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        raise FieldearError(f"day: expected YYYY-MM-DD, got {day!r}")
    limit = number("limit", int, 100)
    offset = number("offset", int, 0)
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise FieldearError(f"limit must be in 1..{MAX_LIMIT} and offset >= 0")
    return EventFilter(label=(args.get("label") or "").strip() or None, day=day,
                       min_score=number("min_score", float), review=(args.get("review") or "any").strip() or "any",
                       limit=limit, offset=offset)


def event_json(e: dict) -> dict:
    out = {k: e.get(k) for k in EVENT_FIELDS}
    has_clip = bool(e.get("clip_path"))
    out["clip_url"] = f"/api/events/{e['id']}/clip" if has_clip else None
    out["spectrogram_url"] = f"/api/events/{e['id']}/spectrogram.png" if has_clip else None
    return out


def _event_or_404(event_id: int) -> dict:
    from runtime.store.queries import event_by_id

    event = event_by_id(db(), event_id)
    if event is None:
        abort(404)
    return event


def _clip_of(event: dict):
    from runtime.web.media import event_clip

    s = current_settings()
    path = event_clip(s.db, s.clips_dir, event.get("clip_path"))
    if path is None:
        abort(404)
    return path


def _clip_by_name(name: str):
    from runtime.web.media import resolve_clip

    path = resolve_clip(current_settings().clips_dir, name)
    if path is None:
        abort(404)
    return path


def _png(path):
    data = current_app.config["FIELDEAR_SPECTROGRAMS"].png(path)
    return current_app.response_class(data, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})


@api.before_request
def _needs_log():
    if current_settings().db is None and request.endpoint != "api.get_csrf":
        return jsonify(error="no device log: this server was started for the studio only"), 404
    return None


@api.get("/csrf")
def get_csrf():
    return jsonify(csrf_token=csrf_token())


@api.get("/status")
def get_status():
    from runtime.web.live import live_status

    return jsonify(live_status(current_settings(), db(), now=current_app.config["FIELDEAR_CLOCK"](),
                               state=current_app.config["FIELDEAR_STATUS_STATE"]))


@api.get("/events")
def list_events():
    from runtime.store.queries import count_events, reviewed_events

    flt = event_filter(request.args)
    conn = db()
    return jsonify(total=count_events(conn, flt), limit=flt.limit, offset=flt.offset,
                   events=[event_json(e) for e in reviewed_events(conn, flt)])


@api.get("/events/<int:event_id>")
def get_event(event_id: int):
    from runtime.store.queries import reviews_of

    event = _event_or_404(event_id)
    return jsonify(event=event_json(event) | {"settings_json": event.get("settings_json")},
                   reviews=reviews_of(db(), event_id))


@api.get("/events/<int:event_id>/scores")
def get_event_scores(event_id: int):
    from runtime.store.queries import event_scores

    event = _event_or_404(event_id)
    return jsonify(label=event["label"], start_s=event["start_s"], end_s=event["end_s"],
                   points=event_scores(db(), event))


@api.get("/events/<int:event_id>/clip")
def get_event_clip(event_id: int):
    return send_file(_clip_of(_event_or_404(event_id)), mimetype="audio/wav", conditional=True)


@api.get("/events/<int:event_id>/spectrogram.png")
def get_event_spectrogram(event_id: int):
    return _png(_clip_of(_event_or_404(event_id)))


@api.get("/clips/<path:name>")
def get_clip(name: str):
    return send_file(_clip_by_name(name), mimetype="audio/wav", conditional=True)


@api.get("/spectrograms/<path:name>")
def get_spectrogram(name: str):
    if not name.endswith(".png"):
        abort(404)
    return _png(_clip_by_name(name[: -len(".png")]))


@api.post("/events/<int:event_id>/review")
def post_review(event_id: int):
    from runtime.store.reviews import Review, add_review
    from runtime.store.schema import connect

    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise FieldearError("expected a JSON object", '{"action": "confirm"|"reject"|"relabel", "label": ..., "by": ...}')
    action = body.get("action")
    label = body.get("label") or None
    by = body.get("by") or current_settings().reviewer
    if not all(v is None or isinstance(v, str) for v in (action, label, by)):
        raise FieldearError("action, label and by must be strings")
    review = Review(event_id, action or "", by, label if action == "relabel" else None).checked()
    if action != "relabel" and label:
        raise FieldearError(f"{action} takes no label", "only relabel names a label")
    _event_or_404(event_id)
    conn = connect(current_settings().db, timeout=10)  # a short write transaction (WAL: readers go on)
    try:
        row = add_review(conn, review, clock=current_app.config["FIELDEAR_CLOCK"])
    finally:
        conn.close()
    return jsonify(review=row), 201


@api.get("/counts")
def get_counts():
    from runtime.store.queries import counts_per_day

    return jsonify(counts=[{"day": d, "label": lab, "events": n} for d, lab, n in counts_per_day(db())])


@api.get("/health")
def get_health():
    from runtime.store.queries import health_history

    limit = request.args.get("limit", "200")
    if not limit.isdigit() or not 1 <= int(limit) <= 5000:
        raise FieldearError("limit must be in 1..5000")
    return jsonify(health=health_history(db(), limit=int(limit)))


@api.get("/model")
def get_model():
    return jsonify(current_app.config["FIELDEAR_MODELS"].overview())


@api.post("/model/retrain")
def post_retrain():
    return jsonify(retrain=current_app.config["FIELDEAR_MODELS"].start_retrain()), 202


@api.post("/model/switch")
def post_switch():
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("version"), str):
        raise FieldearError("expected a JSON object", '{"version": "<a bundle directory of the models dir>"}')
    return jsonify(current_app.config["FIELDEAR_MODELS"].switch(body["version"]))
