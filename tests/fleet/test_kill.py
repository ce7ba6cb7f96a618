"""kill -9 in the middle of the stream, through a real Mosquitto (issue 16): the broker (persistence off: the
worst case, and on), the collector (`fieldear collect`, a process of its own), both at once, and a device
offline for a while. Three devices keep writing events and health rows while it happens; at the end every
row on the devices is exactly once in the central database and every device's outbox is empty (the cursor
moved only on the collector's acks). Short timeouts via settings: ack timeout 1 s, backoff 0.1-0.5 s."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.fleet.broker import (
    Broker,
    CollectorProcess,
    add_event,
    add_health,
    require_mosquitto,
    wait_until,
)

pytest.importorskip("paho.mqtt.client")
DEVICES = ("kill-a", "kill-b", "kill-c")
EVENTS_PER_DEVICE = 60
PACE_S = 0.03  # one event per device every 30 ms: ~2 s of writing, the fault in the middle
ACK_TIMEOUT_S = 1.0


def _central(db: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(str(db), timeout=10)
    try:
        out = {}
        for table, key in (("events", "event_id"), ("health", "health_id")):
            out[table] = conn.execute(f"SELECT device_id, generation, {key} FROM {table} ORDER BY 1, 2, 3").fetchall()
        return out
    finally:
        conn.close()


def _device(path: Path, device: str) -> dict[str, list[tuple]]:
    from runtime.fleet import outbox

    conn = outbox.connect(path)
    try:
        gen = outbox.generation(conn)
        return {t: [(device, gen, r[0]) for r in conn.execute(f"SELECT id FROM {t} ORDER BY id")]
                for t in ("events", "health")}
    finally:
        conn.close()


def _pending(path: Path) -> int:
    from runtime.fleet import outbox

    conn = outbox.connect(path)
    try:
        return outbox.status(conn).total_pending
    finally:
        conn.close()


def run_scenario(tmp_path: Path, fault: str, persistence: bool = False, down_s: float = 1.0) -> dict:
    """Devices write and send; ``fault`` happens in the middle: broker | collector | both | offline."""
    require_mosquitto()
    from runtime.fleet.mqtt import MqttSettings, MqttSink
    from runtime.store.schema import connect

    broker = Broker(tmp_path / "broker", persistence=persistence)
    broker.start()
    collector = CollectorProcess(tmp_path / "central.db", broker.address, tmp_path / "collect.log")
    collector.start()
    settings = MqttSettings.from_config(None, broker.address)
    paths = {d: tmp_path / f"{d}.db" for d in DEVICES}
    sinks = {}

    def new_sink(d):
        return MqttSink(paths[d], settings, d, backoff_s=(0.1, 0.5), ack_timeout_s=ACK_TIMEOUT_S, window=10)

    def writer(d):
        conn = connect(paths[d])
        for i in range(EVENTS_PER_DEVICE):
            add_event(conn, d, ["dog", "rain", "rooster"][i % 3], float(i))
            if i % 20 == 0:
                add_health(conn, d, {"i": i})
            sinks[d].notify()
            time.sleep(PACE_S)
        conn.close()

    stats = {"resent": 0, "connects": 0}
    try:
        for d in DEVICES:
            connect(paths[d]).close()  # the log (and its generation id) exists before the sender starts
            sinks[d] = new_sink(d)
            sinks[d].start()
        assert wait_until(lambda: all(s.connected.is_set() for s in sinks.values()), 10)
        writers = [threading.Thread(target=writer, args=(d,), daemon=True) for d in DEVICES]
        t0 = time.monotonic()
        for w in writers:
            w.start()
        time.sleep(EVENTS_PER_DEVICE * PACE_S / 2)  # the middle of the stream
        offline = DEVICES[0]
        if fault in ("broker", "both"):
            broker.kill()
        if fault in ("collector", "both"):
            collector.kill()
        if fault == "offline":
            sinks[offline].stop()  # the device loses its network; its listener keeps logging
            stats["resent"] += sum(sinks[offline].resent.values())
            stats["connects"] += sinks[offline].connects
        time.sleep(down_s if fault != "offline" else 3 * down_s)
        if fault in ("broker", "both"):
            broker.start()
        if fault in ("collector", "both"):
            collector.start()
        if fault == "offline":
            sinks[offline] = new_sink(offline)
            sinks[offline].start()
        t_back = time.monotonic()
        for w in writers:
            w.join(30)
        t_written = time.monotonic()
        drained = wait_until(lambda: all(_pending(p) == 0 for p in paths.values()), 40, step_s=0.1)
        t_drained = time.monotonic()
        time.sleep(0.5)  # anything still on its way would show up as an extra row
    finally:
        for s in sinks.values():
            s.stop()  # (adds the last connection's counts)
            stats["resent"] += sum(s.resent.values())
            stats["connects"] += s.connects
        out = collector.stop() if collector.proc.poll() is None else ""
        broker.stop()
    assert drained, {d: _pending(p) for d, p in paths.items()}
    central = _central(tmp_path / "central.db")
    device = {t: sorted(r for d in DEVICES for r in _device(paths[d], d)[t]) for t in ("events", "health")}
    result = {
        "fault": fault, "persistence": persistence,
        "events_on_devices": len(device["events"]), "events_in_central": len(central["events"]),
        "health_on_devices": len(device["health"]), "health_in_central": len(central["health"]),
        "duplicates_in_central": len(central["events"]) - len(set(central["events"])),
        "equal": central == device,
        "resent_by_devices": stats["resent"], "device_connects": stats["connects"],
        "write_s": round(t_written - t0, 2), "drained_s_after_back": round(t_drained - t_back, 2),
        "collector_summary": out.strip().splitlines()[-1] if out.strip() else "",
    }
    print(json.dumps(result))
    (tmp_path / "kill.json").write_text(json.dumps(result, indent=1))
    return result


def _check(r: dict) -> None:
    n = len(DEVICES) * EVENTS_PER_DEVICE
    assert r["events_on_devices"] == r["events_in_central"] == n
    assert r["health_on_devices"] == r["health_in_central"] == len(DEVICES) * 3
    assert r["duplicates_in_central"] == 0 and r["equal"] is True


@pytest.mark.parametrize("persistence", [False, True], ids=["persistence-off", "persistence-on"])
def test_broker_sigkill_mid_stream(tmp_path, persistence):
    r = run_scenario(tmp_path, "broker", persistence=persistence)
    _check(r)
    assert r["device_connects"] >= 2 * len(DEVICES)  # every device really lost the broker


def test_collector_sigkill_mid_stream(tmp_path):
    r = run_scenario(tmp_path, "collector")
    _check(r)
    assert r["resent_by_devices"] > 0  # what the dead collector never acknowledged was sent again


@pytest.mark.parametrize("persistence", [False, True], ids=["persistence-off", "persistence-on"])
def test_broker_and_collector_sigkill_at_once(tmp_path, persistence):
    r = run_scenario(tmp_path, "both", persistence=persistence)
    _check(r)


def test_device_offline_then_back(tmp_path):
    r = run_scenario(tmp_path, "offline")
    _check(r)
