"""`fieldear serve --projects DIR` as a user starts it: no device log needed, the train extra required (one line
without it), and a real 2 GB upload refused by the running server before it is read."""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import sys
import time

from tests.web.test_cli_serve import ENV, ROOT, fieldear

BLOCK_TRAIN = """
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in ("tensorflow", "sklearn") else _find(name, *a)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_the_train_extra_one_line(tmp_path):
    r = fieldear("serve", "--projects", str(tmp_path / "p"), pre=BLOCK_TRAIN)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "the studio (--projects) needs the train extra (missing: tensorflow, sklearn)" in lines[0]
    assert "pip install 'fieldear[train]'" in lines[0]
    assert not (tmp_path / "p").exists()


def test_an_explicit_missing_log_is_still_refused(tmp_path):
    r = fieldear("serve", "--projects", str(tmp_path / "p"), "--db", str(tmp_path / "none.db"))
    assert r.returncode == 2 and "no log database" in r.stderr


def request(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            conn.send(body)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace"), resp.getheader("Set-Cookie")
    finally:
        conn.close()


def test_serve_projects_without_a_log_and_a_2gb_upload_refused(tmp_path):
    root, port = tmp_path / "projects", free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "serve", "--projects", str(root),
                             "--port", str(port)], cwd=ROOT, env={**ENV, "HOME": str(tmp_path)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 60
        while True:
            try:
                status, page, cookie = request(port, "GET", "/studio/")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < end, proc.stdout.read() if proc.poll() else "slow"
                time.sleep(0.2)
        assert status == 200 and "Projects" in page and root.is_dir()
        token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        session = cookie.split(";")[0]
        body = f"name=p&csrf_token={token}".encode()
        status, _, _ = request(port, "POST", "/studio/projects", {
            "Cookie": session, "Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(len(body))},
            body)
        assert status == 302 and (root / "p" / "labels.csv").is_file()
        started = time.monotonic()
        status, text, _ = request(port, "POST", "/studio/api/p/p/upload?name=huge.wav", {
            "Cookie": session, "X-CSRF-Token": token, "Content-Type": "application/octet-stream",
            "Content-Length": str(2 * 1024**3)}, b"\0" * 65536)
        assert status == 413 and "exceeds max_body" in text, text  # waitress: the limit + 1 MB (runtime.web.server)
        assert time.monotonic() - started < 10  # refused on its header, not after 2 GB
        assert list((root / "p" / "audio").iterdir()) == []
        assert request(port, "GET", "/studio/p/p/import", {"Cookie": session})[0] == 200  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=30)
