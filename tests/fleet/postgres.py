"""A throwaway PostgreSQL server for the tests, from the Debian packages (``postgresql``: initdb, pg_ctl in
/usr/lib/postgresql/<version>/bin): initdb into a fresh directory, started on a free 127.0.0.1 port with its
unix socket in that directory, trust authentication, stopped (``pg_ctl stop -m immediate``) and removed after.

PostgreSQL refuses to run as root; as root (CI) the server runs as the ``postgres`` user of the Debian package
(``runuser -u postgres``) in a directory it owns. Each test gets its own database (``Postgres.new_database``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.fleet.broker import free_port

SUPERUSER = "fieldear"


def find_pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl, else the ones on PATH."""
    def version(p: str):
        try:
            return float(Path(p).parent.name)
        except ValueError:
            return 0.0

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(Path(d) / t, os.X_OK) for t in ("initdb", "pg_ctl", "postgres")):
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    return None


def _fail_or_skip(msg: str):
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def require_postgres() -> Path:
    """The server binaries' directory, or skip (fail under CI=true: CI installs them via .ci/system-deps.sh)."""
    bindir = find_pg_bin()
    if bindir is None:
        _fail_or_skip("PostgreSQL server binaries not found (bash .ci/system-deps.sh installs package postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _fail_or_skip("psycopg is not installed (pip install -e '.[postgres]')")
    return bindir


class Postgres:
    def __init__(self, bindir: Path, port: int | None = None):
        self.bindir = Path(bindir)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.root = Path(tempfile.mkdtemp(prefix="fieldear-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log_path = self.root / "server.log"
        self.as_user: str | None = None
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.as_user = "postgres"
            import pwd

            try:
                pw = pwd.getpwnam(self.as_user)
            except KeyError:
                raise RuntimeError("running as root, and there is no user 'postgres' to run the server as "
                                   "(install the Debian package postgresql)") from None
            self.sock.mkdir()
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chown(self.sock, pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o700)
        else:
            self.sock.mkdir()
        self.running = False
        self._n = 0

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if proc.returncode != 0:
            log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()} {log}")
        return proc

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        opts = (f"-p {self.port} -c listen_addresses={self.host} -c unix_socket_directories={self.sock} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-o", opts,
                  "-w", "-t", "60", "start")
        self.running = True

    def stop(self) -> None:
        if self.running:
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            finally:
                self.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        self._n += 1
        name = f"central_{os.getpid()}_{self._n}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> "Postgres":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
