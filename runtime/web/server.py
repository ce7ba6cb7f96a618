"""Serving the app with waitress (a pure-Python WSGI server; a few threads, idle in select())."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

THREADS = 4  # page + lazy spectrogram images + audio; the Pi has 4 cores, listen keeps one busy


def serve(settings, threads: int = THREADS) -> None:
    """Run until interrupted (SIGTERM/SIGINT end waitress's loop)."""
    import waitress

    from runtime.web.app import create_app

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # a page's lazy images queue up briefly: normal
    app = create_app(settings)
    where = f"http://{settings.host}:{settings.port}/"
    if settings.projects is not None:
        where += f"studio/ (projects in {settings.projects})"
    log.info("fieldear serve: %s (log %s%s)", where, settings.db or "none: the studio only",
             ", password required" if settings.password_hash else ", loopback only, no password")
    extra = {}
    if app.config.get("STUDIO_MAX_UPLOAD"):  # the studio's upload limit: bigger bodies refused before they are read
        extra["max_request_body_size"] = app.config["STUDIO_MAX_UPLOAD"] + (1 << 20)
    waitress.serve(app, host=settings.host, port=settings.port, threads=threads, ident="fieldear",
                   clear_untrusted_proxy_headers=True, _quiet=True, **extra)
