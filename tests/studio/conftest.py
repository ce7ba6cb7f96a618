"""Fixtures for the studio's web tests: a Flask test client over a projects root (no device log)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.web.conftest import demo_log, log_copy  # noqa: F401  (the device log, for a studio beside it)


def make_studio_app(root: Path, db: Path | None = None, **settings):
    pytest.importorskip("flask")
    from runtime.web.app import create_app
    from runtime.web.settings import WebSettings

    return create_app(WebSettings(db=db, projects=root, **settings), status_state=None)


@pytest.fixture
def studio_client(tmp_path):
    app = make_studio_app(tmp_path / "projects")
    app.testing = True
    return app.test_client()


def csrf(client) -> str:
    return client.get("/api/csrf").get_json()["csrf_token"]
