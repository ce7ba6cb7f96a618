"""runtime.field: notify/watchdog logic, heartbeat rows, system readings, status. No model needed."""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import pytest

from runtime.audio.sources import SourceStats
from runtime.field.heartbeat import (
    HeartbeatHook,
    cpu_temperature,
    disk_free_mb,
    rss_mb,
)
from runtime.field.sdnotify import Notifier
from runtime.field.signals import Signals
from runtime.field.status import collect_status, format_status
from runtime.field.watchdog import NotifyHook
from runtime.listen.loop import ListenStats
from runtime.listen.program import field_hooks
from runtime.store.schema import utc_iso
from runtime.store.writer import Store
from tests.field.support import FakeSystemd

pytestmark = pytest.mark.runtime


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def fake_listener(store=None):
    """The attributes hooks read from a Listener (runtime.listen documents them)."""
    return SimpleNamespace(stats=ListenStats(), source=SimpleNamespace(name="mic:test", stats=SourceStats()),
                           model=SimpleNamespace(bundle=SimpleNamespace(name="m", sha256="f" * 64)), store=store)


@pytest.fixture
def systemd(tmp_path):
    fake = FakeSystemd(tmp_path / "notify.sock")
    yield fake
    fake.close()


def test_watchdog_fed_only_while_audio_arrives(systemd):
    clock = Clock()
    hook = NotifyHook(Notifier(systemd.env(watchdog_s=2.0)), stall_s=5.0, monotonic=clock)
    lst = fake_listener()
    hook.on_start(lst)
    hook.on_tick(lst, 0)
    assert not hook.ready
    for _ in range(4):  # audio for 4 s: READY once, WATCHDOG every 1 s (half of WatchdogSec)
        clock.t += 0.5
        hook.on_audio(lst, 800)
        clock.t += 0.5
        hook.on_audio(lst, 800)
        hook.on_tick(lst, 0)
    systemd.poll(0.2)
    kinds = [next(iter(f)) for _, f in systemd.messages]
    assert kinds.count("READY") == 1 and kinds.index("READY") > 0
    fed = hook.watchdog_sent
    assert fed == 5  # at start, then at 1, 2, 3, 4 s
    for _ in range(20):  # no audio: empty chunks tick, the watchdog is fed until stall_s, then never
        clock.t += 0.5
        hook.on_audio(lst, 0)
        hook.on_tick(lst, 0)
    assert hook.stalled
    assert hook.watchdog_sent == fed + 4  # fed at 1, 2, 3, 4 s after the last audio, stalled at 5 s
    systemd.poll(0.2)
    assert any(f.get("STATUS", "").startswith("STALLED") for _, f in systemd.messages)
    before = hook.watchdog_sent
    clock.t += 1.0
    hook.on_audio(lst, 800)  # the source came back: feeding resumes, no second READY
    assert not hook.stalled and hook.watchdog_sent == before + 1
    hook.on_stop(lst)
    systemd.poll(0.2)
    assert [next(iter(f)) for _, f in systemd.messages].count("READY") == 1
    assert "STOPPING" in systemd.messages[-1][1]


def test_no_audio_at_all_never_ready_and_watchdog_stops(systemd):
    clock = Clock()
    hook = NotifyHook(Notifier(systemd.env(watchdog_s=1.0)), stall_s=3.0, monotonic=clock)
    lst = fake_listener()
    hook.on_start(lst)
    for _ in range(20):
        clock.t += 0.5
        hook.on_tick(lst, 0)
    systemd.poll(0.2)
    assert not hook.ready and "READY" not in {k for _, f in systemd.messages for k in f}
    assert hook.watchdog_sent == 6  # 0, 0.5, ..., 2.5 s; stalled from 3 s on


def test_without_systemd_nothing_is_sent():
    hook = NotifyHook(Notifier({}), stall_s=5.0)
    lst = fake_listener()
    hook.on_start(lst)
    hook.on_audio(lst, 100)
    hook.on_tick(lst, 0)
    hook.on_stop(lst)
    assert hook.ready and hook.watchdog_sent == 0


def test_heartbeat_rows(tmp_path):
    clock, mono = Clock(1_800_000_000.0), Clock(0.0)
    store = Store(tmp_path / "f.db", device_id="dev1", source="mic:test", model_sha="f" * 64, clock=clock)
    thermal = tmp_path / "thermal" / "thermal_zone0"
    thermal.mkdir(parents=True)
    (thermal / "type").write_text("cpu-thermal\n")
    (thermal / "temp").write_text("48312\n")
    notify = NotifyHook(Notifier({}), stall_s=30.0, monotonic=mono)
    hb = HeartbeatHook(every_s=60.0, location="plot 7", clock=clock, monotonic=mono,
                       thermal_root=tmp_path / "thermal", notify=notify)
    lst = fake_listener(store)
    hb.on_start(lst)
    for second in range(1, 181):  # 3 minutes of ticks, once a second
        clock.t += 1
        mono.t += 1
        lst.stats.blocks += 1
        lst.source.stats.overruns = 2
        hb.on_tick(lst, clock.t)
    hb.on_stop(lst)
    store.close()
    rows = sqlite3.connect(tmp_path / "f.db").execute("SELECT t_utc, device_id, json FROM health ORDER BY id").fetchall()
    kinds = [json.loads(r[2])["kind"] for r in rows]
    assert kinds == ["start", "beat", "beat", "beat", "stop"]  # start, 60, 120, 180 s, stop
    beat = json.loads(rows[2][2])
    assert beat["uptime_s"] == 120.0 and beat["blocks"] == 120 and beat["overruns"] == 2
    assert beat["cpu_temp_c"] == 48.3 and beat["location"] == "plot 7" and beat["watchdog_stalled"] is False
    assert beat["rss_mb"] > 10 and beat["disk_free_mb"] > 0 and beat["model_sha"] == "f" * 64
    assert rows[2][0] == utc_iso(1_800_000_120.0) and rows[2][1] == "dev1"


def test_cpu_temperature_zones(tmp_path):
    assert cpu_temperature(tmp_path / "missing") is None
    for i, (kind, temp) in enumerate((("battery", "31000"), ("cpu-thermal", "55500"), ("gpu", "junk"))):
        z = tmp_path / f"thermal_zone{i}"
        z.mkdir()
        (z / "type").write_text(kind)
        (z / "temp").write_text(temp)
    assert cpu_temperature(tmp_path) == 55.5
    (tmp_path / "thermal_zone1" / "type").write_text("x86_pkg")
    assert cpu_temperature(tmp_path) == 31.0  # no cpu zone: the first readable one


def test_rss_and_disk(tmp_path):
    assert rss_mb() > 10
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmRSS:\t  204800 kB\n")
    assert rss_mb(status) == 200.0
    assert rss_mb(tmp_path / "none") is None
    assert disk_free_mb(tmp_path / "not" / "yet" / "there") > 0


def _db_with(tmp_path, kind="beat", age_s=10.0, ended=False, stalled=False, now=1_800_000_000.0):
    clock = Clock(now - age_s)
    store = Store(tmp_path / "s.db", device_id="d", source="mic:x", model_sha="a" * 64, clock=clock)
    store.start_run({"model_name": "m"})
    store.add_event({"label": "dog", "start_utc": utc_iso(now - 100), "end_utc": utc_iso(now - 98),
                     "start_s": 1.0, "end_s": 3.0, "peak": 0.9, "mean": 0.8})
    store.add_health({"kind": kind, "every_s": 60.0, "blocks": 10, "overruns": 1, "watchdog_stalled": stalled,
                      "uptime_s": 3600, "model_sha": "a" * 64}, t_utc=now - age_s)
    if ended:
        store.end_run({"blocks": 10})
    store.close()
    return tmp_path / "s.db", now


def test_status_from_heartbeat(tmp_path):
    db, now = _db_with(tmp_path)
    s = collect_status(db, now=now, state=None)
    assert s["running"] and s["ok"] and s["how"] == "heartbeat"
    assert s["last_event"]["label"] == "dog" and s["heartbeat_age_s"] == 10.0
    assert "overruns: 1" in s["problems"]
    text = format_status(s)
    assert "fieldear: running" in text and "dog" in text and "1 overruns" in text
    late = collect_status(db, now=now + 600, state=None)  # no heartbeat for 10 min at 1/min: killed or hung
    assert not late["running"] and not late["ok"] and "killed or hung" in late["problems"][0]


def test_status_ended_stalled_and_systemd(tmp_path):
    (tmp_path / "a").mkdir()
    db, now = _db_with(tmp_path / "a", kind="stop", ended=True)
    s = collect_status(db, now=now, state=None)
    assert not s["running"] and "ended" in s["problems"][0]
    assert collect_status(db, now=now, state="active")["ok"]  # systemd's word wins
    failed = collect_status(db, now=now, state="failed")
    assert not failed["ok"] and "service fieldear is failed" in failed["problems"]
    (tmp_path / "b").mkdir()
    db2, now2 = _db_with(tmp_path / "b", stalled=True)
    s2 = collect_status(db2, now=now2, state="active")
    assert s2["running"] and not s2["ok"] and "audio stalled at the last heartbeat" in s2["problems"]
    missing = collect_status(tmp_path / "none.db", now=now, state=None)
    assert not missing["ok"] and "no log database" in missing["problems"][0]


def test_field_hooks(tmp_path):
    from runtime.config import default_config

    cfg = default_config("d")
    hooks = field_hooks(cfg, environ={}, reload_config=lambda: cfg)
    assert [type(h).__name__ for h in hooks] == ["NotifyHook", "HeartbeatHook", "Reloader"]
    assert hooks[0].stall_s == cfg.health.watchdog_stall_s and hooks[1].every_s == cfg.health.every_s
    assert len(field_hooks(cfg, environ={})) == 2


def test_reload_failure_keeps_running_and_tells_systemd(tmp_path, systemd):
    from runtime.config import load_config
    from runtime.field.reload import Reloader

    cfg = tmp_path / "fieldear.toml"
    cfg.write_text('[model]\npath = "gone"\n')
    config = load_config(cfg, device_id="d")
    swapped = []
    lst = fake_listener()
    lst.swap_model = swapped.append
    reloader = Reloader(config, lambda: load_config(cfg, device_id="d"), notifier=Notifier(systemd.env()))
    reloader.on_start(lst)
    reloader.on_tick(lst, 0)
    assert reloader.thread is None  # nothing requested, nothing done
    reloader.request()
    reloader.on_tick(lst, 0)
    reloader.thread.join(10)
    assert reloader.failures == 1 and swapped == [] and "model directory not found" in reloader.last_error
    cfg.write_text('[detect]\nsmoothing = "x"\n')  # a broken config on reload: same, the old one stays
    assert reloader.reload(lst) is False and "[detect] smoothing" in reloader.last_error
    assert reloader.config is config
    systemd.poll(0.3)
    kinds = [next(k for k in f if k != "STATUS") for _, f in systemd.messages]
    assert kinds == ["RELOADING", "READY", "RELOADING", "READY"]  # systemd leaves "reloading" either way
    assert systemd.messages[1][1]["STATUS"].startswith("reload failed: ")


def test_signals_only_set_flags_and_are_restored(tmp_path):
    """SIGHUP asks the Reloader (through the shared event) for a reload; SIGTERM sets stop; both handlers go."""
    import os
    import signal

    from runtime.config import default_config
    from runtime.field.reload import Reloader

    before = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM)}
    signals = Signals().install()
    reloader = Reloader(default_config("d"), lambda: default_config("d"), requested=signals.reload)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert reloader.requested.wait(2) and not signals.stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.stop.wait(2)
    finally:
        signals.restore()
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_changed_metrics_port_is_logged_as_needing_a_restart(tmp_path, caplog):
    """The endpoint is bound at start-up, so a new ``[metrics] port`` on SIGHUP must say it waits for a restart."""
    import logging

    from runtime.config import load_config
    from runtime.field.reload import Reloader

    cfg = tmp_path / "fieldear.toml"
    cfg.write_text("[metrics]\nport = 9101\n")
    config = load_config(cfg, device_id="d")
    reloader = Reloader(config, lambda: load_config(cfg, device_id="d"))
    lst = fake_listener()
    lst.swap_model = lambda model, settings: None
    reloader.on_start(lst)
    cfg.write_text("[metrics]\nport = 9102\n")
    with caplog.at_level(logging.WARNING, logger="runtime.field.reload"):
        assert reloader.reload(lst) is True
    assert any("[metrics]" in r.getMessage() and "restart" in r.getMessage() for r in caplog.records)
