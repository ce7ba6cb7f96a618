"""A real Mosquitto broker for the fleet tests and bench: 127.0.0.1 only, a free port, a generated config.

Persistence is on, in the test's own directory: a subscriber's persistent session (the collector's) and
the QoS 1 messages queued for it survive ``restart()``, as with Debian's default broker config. Without it
a restart loses whatever devices publish before the collector has re-subscribed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = True, exe: str | None = None,
                 users: dict[str, str] | None = None, tls: tuple[Path, Path, Path] | None = None):
        self.exe = exe or find_mosquitto()
        if self.exe is None:
            raise FileNotFoundError("mosquitto not found (install it: bash .ci/system-deps.sh)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.conf = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            *([f"cafile {tls[0]}", f"certfile {tls[1]}", f"keyfile {tls[2]}"] if tls else []),
            f"allow_anonymous {'false' if users else 'true'}",
            "max_queued_messages 100000",
            # acks are small packets answering small packets: without this, Nagle + delayed ACKs cost ~40 ms each
            "set_tcp_nodelay true",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_type subscribe",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # as root mosquitto would switch to user "mosquitto", who cannot write into the test's directory
            lines.append("user root")
        if users:
            passwd = self.workdir / "passwd"
            tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            for i, (user, password) in enumerate(users.items()):
                flags = ["-b", "-c"] if i == 0 else ["-b"]
                subprocess.run([tool, *flags, str(passwd), user, password], check=True, capture_output=True, timeout=10)
            lines.append(f"password_file {passwd}")
        if persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/", "persistence_file broker.db"]
        else:
            lines.append("persistence false")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        assert self.proc is None, "broker already running"
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                log = self.log_path.read_text() if self.log_path.exists() else ""
                self.proc = None
                raise RuntimeError(f"mosquitto exited at start: {err} {log[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    self.starts += 1
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.address} within {timeout_s} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL if it hangs."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no persistence file written, no clean disconnects (the crash of the issue)."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(10)
        self.proc.stderr.close()
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> "Broker":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def require_mosquitto():
    """The mosquitto binary, or skip (fail under CI=true: CI installs it via .ci/system-deps.sh)."""
    import pytest

    exe = find_mosquitto()
    if exe is None:
        msg = "mosquitto is not installed (bash .ci/system-deps.sh installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def make_test_certs(out: Path) -> tuple[Path, Path, Path] | None:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI); None if openssl is missing."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert, ext = (out / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt",
                                                         "san.ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args):
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=fieldear test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))
    return ca, cert, key


# ---- simulated device logs, with the real device schema (runtime/store.py) ----


def make_device_db(path: Path):
    import sqlite3

    conn = sqlite3.connect(str(path), timeout=10)
    from runtime.store.schema import SCHEMA

    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)
    conn.commit()
    return conn


def add_event(conn, device_id: str, label: str, start_s: float, peak: float = 0.9, t_utc: str = "2026-05-01T04:12:07.250Z") -> int:
    """Insert and commit one event row the way runtime/store.py does; returns its id."""
    cur = conn.execute(
        "INSERT INTO events (label, start_utc, end_utc, start_s, end_s, peak, mean, model_sha, device_id, source, "
        "settings_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (label, t_utc, t_utc, start_s, start_s + 1.0, peak, peak - 0.1, "sha-test", device_id, "file:test.wav",
         '{"smoothing": 3}'),
    )
    conn.commit()
    return cur.lastrowid


def add_health(conn, device_id: str, data: dict, t_utc: str = "2026-05-01T04:12:07.250Z") -> int:
    import json

    cur = conn.execute("INSERT INTO health (t_utc, device_id, json) VALUES (?, ?, ?)", (t_utc, device_id, json.dumps(data)))
    conn.commit()
    return cur.lastrowid


class CollectorThread:
    """A runtime.fleet.central.collector.Collector in a thread (``with`` starts it and waits for its subscription)."""

    def __init__(self, db_path: Path, address: str, clock=time.time, timeout_s: float = 10.0):
        import threading

        from runtime.fleet.central.collector import Collector
        from runtime.fleet.mqtt import MqttSettings

        self.collector = Collector(db_path, MqttSettings.from_config(None, address), clock=clock, backoff_s=(0.1, 1.0))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.collector.run, args=(self.stop_event,), daemon=True)
        self.timeout_s = timeout_s

    @property
    def stats(self):
        return self.collector.stats

    def __enter__(self) -> "CollectorThread":
        self.thread.start()
        if not self.collector.subscribed.wait(self.timeout_s):
            self.stop()
            raise RuntimeError("collector did not subscribe in time")
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(self.timeout_s)
        assert not self.thread.is_alive(), "collector thread did not stop"

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            self.stop()


class CollectorProcess:
    """`fieldear collect --db DB` in a process of its own (so that it can be SIGKILLed, and its CPU and memory
    read from /proc/<pid>); its stdout and stderr go to ``log_path`` (appended across restarts)."""

    def __init__(self, db, address: str, log_path: Path, extra_args: tuple[str, ...] = ()):
        self.db, self.address, self.log_path, self.extra_args = db, address, Path(log_path), tuple(extra_args)
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> None:
        root = Path(__file__).resolve().parents[2]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runtime.cli", "collect", "--broker", self.address, "--db", str(self.db),
                 *self.extra_args],
                stdout=out, stderr=subprocess.STDOUT, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> str:
        """SIGTERM, wait; returns the output of every run so far (the last run's summary line last)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(15)
        return self.log_path.read_text(errors="replace")


def wait_until(predicate, timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())


def central_events(db_path: Path) -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(str(db_path), timeout=10)
    try:
        return conn.execute("SELECT device_id, event_id, label, start_s FROM events ORDER BY device_id, event_id").fetchall()
    finally:
        conn.close()


def device_events(db_path: Path) -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(str(db_path), timeout=10)
    try:
        return conn.execute("SELECT device_id, id, label, start_s FROM events ORDER BY id").fetchall()
    finally:
        conn.close()
