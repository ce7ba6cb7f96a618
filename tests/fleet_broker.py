"""A real Mosquitto broker for the fleet tests and bench: 127.0.0.1 only, a free port, a generated config.

Persistence is on, in the test's own directory: a subscriber's persistent session (the collector's) and
the QoS 1 messages queued for it survive ``restart()``, as with Debian's default broker config. Without it
a restart loses whatever devices publish before the collector has re-subscribed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
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
    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = True, exe: str | None = None):
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
            "allow_anonymous true",
            "max_queued_messages 100000",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # as root mosquitto would switch to user "mosquitto", who cannot write into the test's directory
            lines.append("user root")
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


# ---- simulated device logs with the documented schema (runtime/store.py writes the same) ----

DEVICE_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label TEXT NOT NULL, start_utc TEXT NOT NULL, end_utc TEXT NOT NULL,
    start_s REAL NOT NULL, end_s REAL NOT NULL, peak REAL NOT NULL, mean REAL NOT NULL,
    model_sha TEXT, device_id TEXT, source TEXT, settings_json TEXT, clip_path TEXT);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY AUTOINCREMENT, t_utc TEXT NOT NULL, device_id TEXT, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
