"""The server beside a listener that is writing: the real `fieldear serve` and a real `fieldear listen
--realtime` on the same log. Pages and reviews go on while events arrive; the listener loses no row."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.web.conftest import DEMO, ROOT

pytestmark = pytest.mark.slow
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_beside_a_writing_listener(tmp_path):
    pytest.importorskip("flask")
    db = tmp_path / "fieldear.db"
    listen = subprocess.Popen([sys.executable, "-m", "runtime.cli", "listen", "--file", str(DEMO), "--db", str(db),
                               "--clips", "--realtime", "--speed", "3", "-q"],
                              cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not db.exists() and time.monotonic() < deadline:
        assert listen.poll() is None, listen.stderr.read()
        time.sleep(0.1)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--db", str(db), "--port", str(port), "-q"],
                             cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        while True:
            try:
                token = json.loads(opener.open(base + "/api/csrf", timeout=5).read())["csrf_token"]
                break
            except OSError:
                assert serve.poll() is None, serve.stderr.read()
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        reviewed, pages = set(), 0
        while listen.poll() is None:
            assert opener.open(base + "/detections", timeout=10).status == 200
            assert opener.open(base + "/live", timeout=10).status == 200
            pages += 2
            events = json.loads(opener.open(base + "/api/events?review=unreviewed", timeout=10).read())["events"]
            for e in events:
                req = urllib.request.Request(f"{base}/api/events/{e['id']}/review", method="POST",
                                             data=json.dumps({"action": "confirm", "by": "t"}).encode(),
                                             headers={"Content-Type": "application/json", "X-CSRF-Token": token})
                assert opener.open(req, timeout=10).status == 201
                reviewed.add(e["id"])
            time.sleep(0.2)
        assert listen.returncode == 0, listen.stderr.read()[-2000:]
    finally:
        serve.terminate()
        serve.wait(timeout=10)
        if listen.poll() is None:
            listen.kill()
    conn = sqlite3.connect(db)
    stop = json.loads(conn.execute("SELECT json FROM health ORDER BY id DESC LIMIT 1").fetchone()[0])
    n_events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    n_reviews = conn.execute("SELECT COUNT(DISTINCT event_id) FROM reviews").fetchone()[0]
    conn.close()
    assert stop["kind"] == "stop" and stop["dropped_rows"] == 0 and stop["write_errors"] == 0
    assert stop["dropped_blocks"] == 0 and stop["overruns"] == 0
    assert pages >= 10 and n_events >= 4 and len(reviewed) >= 1 and n_reviews == len(reviewed)
