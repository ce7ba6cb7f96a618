"""Fixtures for the studio's web tests: a Flask test client over a projects root (no device log)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.web.conftest import csrf, demo_log, log_copy  # noqa: F401  (csrf re-exported; the device log fixtures)


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


def labels_csv(project: Path) -> dict[str, str]:
    """labels.csv of a project folder as {file name under audio/: label}, in file order."""
    with open(project / "labels.csv", newline="", encoding="utf-8") as f:
        return {Path(row["file"]).name: row["label"] for row in csv.DictReader(f)}
