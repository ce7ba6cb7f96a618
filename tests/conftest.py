"""Shared fixtures. Real audio comes from ../shared/data (see its README for licences)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FIELDEAR_SHARED", ROOT.parent / "shared" / "data"))
# Set by .ci/arm64.sh: the tests run under qemu user-mode, tens of times slower than the hardware.
EMULATED = os.environ.get("FIELDEAR_TEST_EMULATED", "") == "1"


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data; fails loudly under CI=true when missing, skips elsewhere."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        msg = f"real test data missing: {path} (clone the project with ../shared beside it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def esc10(shared_data) -> Path:
    return shared_path("esc10")


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto on 127.0.0.1 (a free port), stopped after the test (tests/fleet/broker.py)."""
    from tests.fleet.broker import Broker, require_mosquitto

    require_mosquitto()
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the session (tests/fleet/postgres.py); skips when the Debian server
    binaries (or psycopg) are missing, fails instead under CI=true."""
    from tests.fleet.postgres import Postgres, require_postgres

    bindir = require_postgres()
    server = Postgres(bindir)
    try:
        server.start()
    except BaseException:
        server.stop()  # removes its directory
        raise
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()
