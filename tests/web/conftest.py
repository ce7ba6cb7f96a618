"""Fixtures for the web tests: a real device log made by `fieldear listen --file runtime/demo/demo.wav --clips`
(once per session), a writable copy per test, and a Flask test client over it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "runtime" / "demo" / "demo.wav"


def make_demo_log(directory: Path) -> Path:
    """A real listen run over the demo recording, with event clips saved beside the log."""
    db = directory / "fieldear.db"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "listen", "--file", str(DEMO), "--db", str(db), "--clips"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (directory / "clips").is_dir()
    return db


@pytest.fixture(scope="session")
def demo_log(tmp_path_factory) -> Path:
    return make_demo_log(tmp_path_factory.mktemp("demo-log"))


@pytest.fixture
def log_copy(demo_log, tmp_path) -> Path:
    """A copy of the demo log and its clips this test may change."""
    shutil.copytree(demo_log.parent, tmp_path / "data")
    return tmp_path / "data" / "fieldear.db"


def make_client(db: Path, **settings):
    pytest.importorskip("flask")
    from runtime.web.app import create_app
    from runtime.web.settings import WebSettings

    app = create_app(WebSettings(db=db, **settings), clock=lambda: 1_800_000_000.0, status_state=None)
    app.testing = True
    return app.test_client()


@pytest.fixture
def client(log_copy):
    return make_client(log_copy)


def csrf(client) -> str:
    return client.get("/api/csrf").get_json()["csrf_token"]
