"""The service as systemd sees it: `fieldear listen` under a fake systemd (notify socket), signals, faults.

Each test runs the real CLI (or the Listener) on real forest audio with a bundle whose label "a" wins on
any audio, so an event is open whenever audio flows. Building that bundle needs TensorFlow.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.field.support import FakeSystemd, field_bundles, forest_recording

pytestmark = [pytest.mark.train, pytest.mark.slow]

FIELDEAR = [sys.executable, "-m", "runtime.cli"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    return field_bundles(tmp_path_factory.getbasetemp() / "field-bundles")


@pytest.fixture(scope="session")
def forest(tmp_path_factory):
    return forest_recording(tmp_path_factory.getbasetemp() / "forest40.wav", n_files=4)


@pytest.fixture
def systemd(tmp_path):
    fake = FakeSystemd(tmp_path / "notify.sock")
    yield fake
    fake.close()


def write_config(tmp_path: Path, model: Path, every_s: float = 2.0, stall_s: float = 3.0, extra: str = "") -> Path:
    cfg = tmp_path / "fieldear.toml"
    cfg.write_text(f'[device]\nid = "test-01"\n[model]\npath = "{model}"\n[store]\ndata_dir = "{tmp_path / "data"}"\n'
                   f"[health]\nevery_s = {every_s}\nwatchdog_stall_s = {stall_s}\n{extra}")
    return cfg


def start_listen(args: list[str], env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    full_env.pop("NOTIFY_SOCKET", None) if env is None or "NOTIFY_SOCKET" not in env else None
    return subprocess.Popen([*FIELDEAR, *args], cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def db_rows(db: Path, sql: str, args=()) -> list:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_notify_protocol_and_sigterm_during_an_event(tmp_path, systemd, bundles, forest):
    cfg = write_config(tmp_path, bundles["A"])
    proc = start_listen(["listen", "--file", str(forest), "--realtime", "--config", str(cfg)],
                        env=systemd.env(watchdog_s=2.0))
    try:
        t_ready = systemd.wait_for("READY", timeout=60)
        systemd.poll(6.0)  # audio flows for 6 s: the event for "a" is open
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
        t_exit = time.monotonic() - t_term
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    systemd.poll(0.3)
    kinds = [k for _, f in systemd.messages for k in f if k != "STATUS"]
    watchdogs_after_ready = [t for t in systemd.times("WATCHDOG") if t > t_ready]
    transcript = {"ready_s": round(t_ready, 2), "watchdog_count": len(systemd.times("WATCHDOG")),
                  "stopping": "STOPPING" in kinds, "exit_code": proc.returncode, "sigterm_to_exit_s": round(t_exit, 2),
                  "sequence": kinds}
    print("notify transcript:", json.dumps(transcript))
    assert proc.returncode == 0, err
    assert t_exit < 5.0
    assert kinds.index("READY") < kinds.index("STOPPING") and kinds[-1] == "STOPPING"
    assert kinds.count("READY") == 1
    assert len(watchdogs_after_ready) >= 4  # every ~1 s (half of WATCHDOG_USEC) while audio flows
    gaps = np.diff(watchdogs_after_ready)
    assert gaps.max() < 2.0, gaps  # never late enough for systemd to kill us
    db = tmp_path / "data" / "fieldear.db"
    events = db_rows(db, "SELECT label, start_s, end_s, device_id FROM events")
    assert len(events) == 1 and events[0][0] == "a" and events[0][3] == "test-01"
    audio_s = db_rows(db, "SELECT MAX(end_s) FROM windows")[0][0]
    assert events[0][2] >= audio_s - 1.2  # closed at the end of the audio heard, not dropped
    assert db_rows(db, "PRAGMA integrity_check")[0][0] == "ok"
    kinds_logged = [json.loads(r[0])["kind"] for r in db_rows(db, "SELECT json FROM health ORDER BY id")]
    assert kinds_logged[0] == "start" and kinds_logged[-1] == "stop" and "beat" in kinds_logged


def test_stalled_source_stops_watchdog_feeding(tmp_path, systemd, bundles, forest):
    """Audio stops arriving (a microphone that delivers nothing: empty chunks), the loop keeps ticking:
    WATCHDOG=1 continues until watchdog_stall_s, then stops, so systemd would restart the service."""
    from runtime.audio.sources import FileSource
    from runtime.config import load_config
    from runtime.detect.events import PostSettings
    from runtime.listen.loop import Listener
    from runtime.listen.program import field_hooks
    from runtime.model.model import Model
    from runtime.store.writer import Store

    class StallingMic(FileSource):
        """Real audio for a while, then nothing: like a USB microphone that hung (chunks stay empty)."""

        def __init__(self, path, audio_s, silence_s):
            super().__init__(path, realtime=True, chunk_seconds=0.25)
            self.audio_s, self.silence_s = audio_s, silence_s
            self.stalled_at = None

        def blocks(self):
            sent = 0.0
            for chunk in super().blocks():
                yield chunk
                sent += len(chunk) / self.sample_rate
                if sent >= self.audio_s:
                    break
            self.stalled_at = time.monotonic()
            while time.monotonic() - self.stalled_at < self.silence_s:
                time.sleep(0.1)
                yield np.zeros(0, dtype=np.float32)

    config = load_config(write_config(tmp_path, bundles["A"], stall_s=2.0), device_id="x")
    model = Model.load(config.model.path)
    source = StallingMic(forest, audio_s=4.0, silence_s=5.0)
    store = Store(tmp_path / "s.db", device_id="x", source=source.name, model_sha=model.bundle.sha256)
    hooks = field_hooks(config, environ=systemd.env(watchdog_s=1.0))
    listener = Listener(model, source, store, PostSettings(), hooks=hooks, tick_s=0.1)
    poller = threading.Thread(target=systemd.poll, args=(14.0,))
    poller.start()
    listener.run()
    store.close()
    poller.join()
    t_stall = source.stalled_at - systemd.t0
    fed = systemd.times("WATCHDOG")
    assert any(t < t_stall for t in fed) and "READY" in {k for _, f in systemd.messages for k in f}
    assert max(fed) < t_stall + 2.0 + 0.3, (fed, t_stall)  # nothing after watchdog_stall_s
    assert max(fed) > t_stall + 1.0  # but fed while within the allowance
    assert any(f.get("STATUS", "").startswith("STALLED") for _, f in systemd.messages)
    assert hooks[0].stalled


def test_sigkill_then_restart_resumes_with_db_intact(tmp_path, systemd, bundles, forest):
    cfg = write_config(tmp_path, bundles["A"], every_s=1.0)
    proc = start_listen(["listen", "--file", str(forest), "--realtime", "--config", str(cfg)],
                        env=systemd.env(watchdog_s=2.0))
    try:
        systemd.wait_for("READY", timeout=60)
        systemd.poll(4.0)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    db = tmp_path / "data" / "fieldear.db"
    windows_before = db_rows(db, "SELECT COUNT(*) FROM windows")[0][0]
    assert windows_before >= 2 and db_rows(db, "PRAGMA integrity_check")[0][0] == "ok"
    status = subprocess.run([*FIELDEAR, "status", "--db", str(db), "--json"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert status.returncode in (0, 3)  # a heartbeat within 2 intervals may still look alive
    # Restart (what systemd does): a new run appends to the same log.
    again = subprocess.run([*FIELDEAR, "listen", "--file", str(forest), "--config", str(cfg), "--json"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["run"] == "run:000002" and summary["events"] >= 1
    assert db_rows(db, "PRAGMA integrity_check")[0][0] == "ok"
    assert db_rows(db, "SELECT COUNT(*) FROM windows")[0][0] == windows_before + summary["blocks"]
    status = subprocess.run([*FIELDEAR, "status", "--db", str(db), "--json"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert json.loads(status.stdout)["run"]["key"] == "run:000002"


@pytest.mark.parametrize("fault", ["config", "bundle"])
def test_corrupt_config_or_bundle_refuses_to_start_with_one_line(tmp_path, systemd, bundles, forest, fault):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(bundles["A"], bundle)
    if fault == "config":
        cfg = write_config(tmp_path, bundle, extra='[detect]\nsmoothing = "x"\n')
        expect = 'fieldear.toml: [detect] smoothing: expected an integer >= 1, got "x"'
    else:
        cfg = write_config(tmp_path, bundle)
        head = bundle / "head.tflite"
        data = bytearray(head.read_bytes())
        data[len(data) // 2] ^= 0xFF
        head.write_bytes(bytes(data))
        expect = "head.tflite checksum mismatch"
    proc = start_listen(["listen", "--file", str(forest), "--config", str(cfg)], env=systemd.env(watchdog_s=2.0))
    out, err = proc.communicate(timeout=60)
    systemd.poll(0.2)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 2
    assert len(lines) == 1, err
    assert lines[0].startswith("fieldear listen: error: ") and expect in lines[0]
    assert not systemd.messages  # never READY: systemd sees the start fail
    assert not (tmp_path / "data" / "fieldear.db").exists()


def test_sighup_swaps_the_model_without_a_gap(tmp_path, systemd, bundles, forest):
    models = tmp_path / "models"
    models.mkdir()
    (models / "current").symlink_to(bundles["A"])
    cfg = write_config(tmp_path, models / "current")
    proc = start_listen(["listen", "--file", str(forest), "--realtime", "--config", str(cfg)],
                        env=systemd.env(watchdog_s=2.0))
    try:
        systemd.wait_for("READY", timeout=60)
        systemd.poll(4.0)
        tmp_link = models / ".current.new"  # what deploy does: ln -sfn + mv -T (atomic)
        tmp_link.symlink_to(bundles["B"])
        os.replace(tmp_link, models / "current")
        n = len(systemd.messages)
        proc.send_signal(signal.SIGHUP)
        systemd.wait_for("RELOADING", timeout=10, after=n)
        t_ready = systemd.wait_for("READY", timeout=30, after=n + 1)
        systemd.poll(4.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "model swapped" in err
    from runtime.model.bundle import load_bundle

    sha_a, sha_b = load_bundle(bundles["A"]).sha256, load_bundle(bundles["B"]).sha256
    rows = db_rows(tmp_path / "data" / "fieldear.db", "SELECT start_s, model_sha FROM windows ORDER BY id")
    shas = [r[1] for r in rows]
    assert shas[0] == sha_a and shas[-1] == sha_b
    switch = shas.index(sha_b)
    assert set(shas[:switch]) == {sha_a} and set(shas[switch:]) == {sha_b}  # one switch, between blocks
    starts = np.array([r[0] for r in rows])
    hop = 50 * 1024 / 44100
    assert np.allclose(np.diff(starts), hop, atol=2e-3), np.diff(starts)  # no gap, no repeat
    assert starts[0] == pytest.approx(0.0, abs=1e-3)
    status = [f["STATUS"] for t, f in systemd.messages if "READY" in f and t >= t_ready]
    assert status and status[0].startswith("reloaded")
