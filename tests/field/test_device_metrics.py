"""`fieldear listen --metrics-port`: the device's Prometheus endpoint, scraped during a real paced replay of the
bundled demo recording with the bundled default model."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.fleet.broker import free_port
from tests.scrape import scrape

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "runtime" / "demo" / "demo.wav"
EVENTS = "fieldear_device_events_total{label="


def _listen(tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.Popen([sys.executable, "-m", "runtime.cli", "listen", "--file", str(DEMO), "--realtime",
                             "--speed", "4", "--db", str(tmp_path / "fieldear.db"), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _scrape(port: int) -> dict[str, float] | None:
    try:
        return scrape(port, timeout=2)
    except (urllib.error.URLError, ConnectionError):
        return None  # not up yet, or already stopped


def _listening_sockets(pid: int) -> int:
    """TCP sockets in LISTEN state held by process ``pid`` (its fds matched to /proc/net/tcp{,6} inodes)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(table):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                n += cols[3] == "0A" and cols[9] in inodes
    return n


def _events_by_label(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT label, COUNT(*) FROM events GROUP BY label").fetchall())
    finally:
        conn.close()


def test_metrics_scraped_during_a_replay_match_the_log(tmp_path):
    pytest.importorskip("prometheus_client")
    port = free_port()
    proc = _listen(tmp_path, "--metrics-port", str(port))
    scrapes = []
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            m = _scrape(port)
            if m is not None:
                scrapes.append(m)
            time.sleep(0.5)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert scrapes, f"the endpoint never answered; stderr:\n{err}"
    last = scrapes[-1]
    assert last["fieldear_device_blocks_total"] > 0
    blocks = [m["fieldear_device_blocks_total"] for m in scrapes]
    assert blocks == sorted(blocks)  # a counter never goes down
    for key in ("fieldear_device_overruns_total", "fieldear_device_dropped_blocks_total",
                "fieldear_device_db_size_bytes", "fieldear_device_disk_free_bytes",
                "fieldear_device_seconds_since_last_audio"):
        assert key in last
    assert "fieldear_device_outbox_backlog{stream=\"events\"}" not in last  # no MQTT configured
    assert last["fieldear_device_db_size_bytes"] > 0

    final = _events_by_label(tmp_path / "fieldear.db")
    assert final, "the demo replay logged no events"
    scraped_labels = set()
    for m in scrapes:
        for key, value in m.items():
            if key.startswith(EVENTS):
                label = key[len(EVENTS) + 1:-2]
                scraped_labels.add(label)
                assert label in final and value <= final[label], (label, value, final)
    assert scraped_labels  # events were seen by label while the replay ran


def test_no_port_without_the_flag(tmp_path):
    code = ("import sys, runtime.cli.listen, runtime.listen.program, runtime.field.metrics; "
            "sys.exit('prometheus_client' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=60).returncode == 0

    proc = _listen(tmp_path)
    try:
        seen_running, listening = False, 0
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                listening = max(listening, _listening_sockets(proc.pid))
                seen_running = True
            except OSError:
                break  # exited between poll and read
            time.sleep(0.5)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert seen_running
    assert listening == 0


def test_missing_extra_is_one_clear_error(monkeypatch):
    from runtime.errors import FieldearError
    from runtime.field.metrics import MetricsHook

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails as without the extra
    with pytest.raises(FieldearError) as info:
        MetricsHook(0)
    assert "fieldear[metrics]" in info.value.hint


def test_outbox_backlog_counts_rows_the_collector_has_not_acknowledged(tmp_path):
    pytest.importorskip("prometheus_client")
    from runtime.audio.sources import SourceStats
    from runtime.field.metrics import DeviceMetrics
    from runtime.fleet import outbox
    from runtime.listen.loop import ListenStats
    from tests.fleet.broker import add_event, make_device_db

    db = tmp_path / "fieldear.db"
    conn = make_device_db(db)
    ids = [add_event(conn, "d1", "dog", float(i)) for i in range(3)]
    outbox.ensure_state(conn)
    outbox.mark_acked(conn, "events", ids[0])
    conn.close()

    listener = SimpleNamespace(stats=ListenStats(), source=SimpleNamespace(stats=SourceStats()),
                               store=SimpleNamespace(path=db, size_mb=lambda: 0.1))

    def samples(with_outbox: bool) -> dict:
        metrics = DeviceMetrics(outbox=with_outbox)
        metrics.listener = listener
        return {(f.name, tuple(s.labels.values())): s.value for f in metrics.collect() for s in f.samples}

    assert samples(True)[("fieldear_device_outbox_backlog", ("events",))] == 2
    assert samples(True)[("fieldear_device_outbox_backlog", ("health",))] == 0
    assert not any(name == "fieldear_device_outbox_backlog" for name, _ in samples(False))


def test_metrics_port_in_the_config_is_checked(tmp_path):
    from runtime.config import ConfigError, load_config

    cfg = tmp_path / "fieldear.toml"
    cfg.write_text("[metrics]\nport = 9108\n")
    assert load_config(cfg, device_id="d1").metrics.port == 9108
    cfg.write_text("[metrics]\nport = 70000\n")
    with pytest.raises(ConfigError, match=r"\[metrics\] port"):
        load_config(cfg, device_id="d1")
