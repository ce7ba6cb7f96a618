"""The Flask app factory: ``create_app(settings, clock=time.time)``.

Cross-cutting rules live here: a read-only connection to the log per request (``db()``; SQLite ``mode=ro``
through ``runtime.store.schema.connect``, so the listener writing the WAL log is never blocked), login when a
password is set (a session cookie from /login, or HTTP Basic for scripts), a CSRF token checked on every POST
(GET never changes anything), and security headers on every response.
"""

from __future__ import annotations

import base64
import hmac
import logging
import secrets
import time
from pathlib import Path
from typing import Callable

from flask import Flask, g, jsonify, redirect, request, session, url_for

from runtime.errors import FieldearError

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
OPEN_ENDPOINTS = {"static", "pages.login", "favicon"}
CSP = ("default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/studio/api/"))


def _basic_auth_ok(stored: str) -> bool:
    from runtime.web.passwords import verify_password

    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        _, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return verify_password(stored, password)


def db():
    """This request's read-only connection to the log."""
    if "db" not in g:
        from runtime.store.schema import connect

        if current_settings().db is None:
            raise FieldearError("no device log: this server was started for the studio only",
                                "start `fieldear serve --db LOG` for the review pages")
        g.db = connect(current_settings().db, readonly=True, timeout=5)
    return g.db


def current_settings():
    from flask import current_app

    return current_app.config["FIELDEAR_SETTINGS"]


def create_app(settings, clock: Callable[[], float] = time.time, status_state=..., models=None) -> Flask:
    """The web app for ``settings`` (a ``runtime.web.settings.WebSettings``); with ``settings.projects`` also the
    studio (``convert.studio.web``, under /studio); with ``settings.db`` None only the studio. ``clock``: wall time
    for reviews and status; ``status_state``: the systemd state to report (tests), else asked from systemctl;
    ``models``: the retrain/switch control (a ``runtime.web.retrain.ModelControl``; tests inject one)."""
    from runtime.web.api import api
    from runtime.web.pages import pages
    from runtime.web.retrain import ModelControl
    from runtime.web.spectrogram import SpectrogramCache

    app = Flask(__name__, template_folder=str(PACKAGE_DIR / "templates"), static_folder=str(PACKAGE_DIR / "static"))
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # per process: a restart logs everyone out, nothing to leak on disk
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=64 * 1024,
        JSON_SORT_KEYS=False,
        FIELDEAR_SETTINGS=settings,
        FIELDEAR_CLOCK=clock,
        FIELDEAR_STATUS_STATE=status_state,
        FIELDEAR_SPECTROGRAMS=SpectrogramCache(settings.model),
        FIELDEAR_MODELS=models if models is not None else (
            ModelControl(settings, clock=clock) if settings.db is not None else None),
    )
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["auth_required"] = settings.password_hash is not None
    app.register_blueprint(pages)
    app.register_blueprint(api, url_prefix="/api")
    if settings.projects is not None:
        from convert.studio.web import register_studio  # the train extra: only imported for --projects

        register_studio(app, settings.projects)

    @app.get("/favicon.ico")
    def favicon():
        return app.send_static_file("favicon.svg")

    @app.before_request
    def _guard():
        if settings.password_hash is not None and request.endpoint not in OPEN_ENDPOINTS:
            if not session.get("auth") and not _basic_auth_ok(settings.password_hash):
                if _wants_json():
                    return jsonify(error="login required"), 401, {"WWW-Authenticate": 'Basic realm="fieldear"'}
                return redirect(url_for("pages.login", next=request.full_path if request.query_string else request.path))
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
            expected = session.get("csrf") or ""
            if not expected or not hmac.compare_digest(str(sent), str(expected)):
                log.warning("refused %s %s: CSRF token missing or wrong", request.method, request.path)
                return jsonify(error="CSRF token missing or wrong (reload the page)"), 403
        return None

    @app.teardown_appcontext
    def _close(exc):
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()

    @app.after_request
    def _headers(resp):
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if request.endpoint != "static" and "Cache-Control" not in resp.headers:
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(FieldearError)
    def _fieldear_error(exc):
        if _wants_json():
            return jsonify(error=exc.message, hint=exc.hint), 400
        return f"error: {exc}", 400, {"Content-Type": "text/plain; charset=utf-8"}

    @app.errorhandler(404)
    def _not_found(exc):
        if _wants_json():
            return jsonify(error="not found"), 404
        return "not found", 404, {"Content-Type": "text/plain; charset=utf-8"}

    return app
