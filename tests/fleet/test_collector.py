"""The central collector: idempotent storage, persistent session, report, and the `collect` command."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.cli.main import main as cli_main
from runtime.errors import FieldearError
from tests.fleet.broker import (
    Broker,
    CollectorThread,
    add_event,
    central_events,
    device_events,
    make_device_db,
    require_mosquitto,
    wait_until,
)

mqtt = pytest.importorskip("paho.mqtt.client")
ROOT = Path(__file__).resolve().parents[2]


def _event(device: str, event_id: int, label: str = "dog", start_utc: str = "2026-05-01T04:12:07.250Z") -> bytes:
    return json.dumps({"id": f"{device}:{event_id}", "device_id": device, "event_id": event_id, "label": label,
                       "start_utc": start_utc, "end_utc": start_utc, "start_s": 1.0, "end_s": 2.0, "peak": 0.9,
                       "mean": 0.8, "settings": {"smoothing": 3}, "sent_ts": 99.0}).encode()


def _collector(tmp_path, clock=lambda: 100.0):
    from runtime.fleet.central.collector import Collector, open_central
    from runtime.fleet.mqtt import MqttSettings

    col = Collector(tmp_path / "central.db", MqttSettings(host="127.0.0.1"), clock=clock)
    return col, open_central(tmp_path / "central.db")


def test_handle_is_idempotent_and_rejects_garbage(tmp_path, caplog):
    col, conn = _collector(tmp_path)
    assert col.handle(conn, "fieldear/d1/events", _event("d1", 1)) == "stored"
    assert col.handle(conn, "fieldear/d1/events", _event("d1", 1)) == "duplicate"  # redelivered
    assert col.handle(conn, "fieldear/d2/events", _event("d2", 1)) == "stored"  # same event id, other device
    assert col.handle(conn, "fieldear/d1/events", _event("d1", 1, label="rain")) == "conflict"
    assert col.handle(conn, "fieldear/d1/events", b"{not json") == "rejected"
    assert col.handle(conn, "fieldear/d1/events", b'{"label": "dog"}') == "rejected"  # no event_id
    assert col.handle(conn, "fieldear/d1/nonsense", b"{}") == "rejected"
    assert col.handle(conn, "fieldear/d1/status", b"offline") == "status"
    rows = conn.execute("SELECT device_id, event_id, label, settings_json, sent_ts, received_ts FROM events "
                        "ORDER BY device_id").fetchall()
    assert rows == [("d1", 1, "dog", '{"smoothing": 3}', 99.0, 100.0), ("d2", 1, "dog", '{"smoothing": 3}', 99.0, 100.0)]
    review = {"review_id": 4, "event_id": 1, "verdict": "reject", "label": "background", "t_utc": "x", "reviewer": "ana"}
    assert col.handle(conn, "fieldear/d1/reviews", json.dumps(review).encode()) == "stored"
    assert col.handle(conn, "fieldear/d1/reviews", json.dumps(review).encode()) == "duplicate"
    assert col.handle(conn, "fieldear/d1/reviews", b'{"review_id": 5}') == "rejected"
    assert conn.execute("SELECT device_id, review_id, event_id, verdict, label, reviewer FROM reviews").fetchall() == [
        ("d1", 4, 1, "reject", "background", "ana")]
    s = col.stats
    assert (s.events, s.reviews, s.duplicates, s.conflicts, s.rejected, s.status) == (2, 1, 2, 1, 4, 1)
    assert "different content" in caplog.text


def test_redelivered_messages_through_the_broker_are_stored_once(tmp_path, broker):
    host, port = broker.host, broker.port
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="redeliverer")
    pub.connect(host, port)
    pub.loop_start()
    try:
        with CollectorThread(tmp_path / "central.db", broker.address) as col:
            infos = []
            for event_id in (1, 2, 2, 3, 1, 3, 3):  # duplicates, out of order
                infos.append(pub.publish("fieldear/dup-1/events", _event("dup-1", event_id), qos=1))
            for info in infos:
                info.wait_for_publish(5)
                assert info.is_published()
            assert wait_until(lambda: col.stats.events + col.stats.duplicates == 7, 5)
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert [r[1] for r in central_events(tmp_path / "central.db")] == [1, 2, 3]
    assert col.stats.duplicates == 4


def test_collector_away_gets_what_was_sent_meanwhile(tmp_path, broker):
    """Persistent session: the broker queues QoS 1 messages for the collector while it is not connected."""
    from runtime.fleet.mqtt import MqttSettings, send_pending

    db = make_device_db(tmp_path / "dev.db")
    settings = MqttSettings.from_config(None, broker.address)
    with CollectorThread(tmp_path / "central.db", broker.address):
        pass  # subscribe once, then go away
    for i in range(30):
        add_event(db, "dev-q", "rooster", float(i))
    away = send_pending(tmp_path / "dev.db", settings, "dev-q", timeout_s=1.5)
    # the broker has them (queued for the collector), nobody confirmed storing them: still pending on the device
    assert away.published["events"] >= 30 and away.acked["events"] == 0 and away.status.pending["events"] == 30
    with CollectorThread(tmp_path / "central.db", broker.address) as col:
        assert wait_until(lambda: col.stats.events == 30, 10)
        # the next send gets the acks (of duplicates: the collector has them already) and empties the outbox
        again = send_pending(tmp_path / "dev.db", settings, "dev-q", timeout_s=10)
        assert again.acked["events"] == 30 and again.status.total_pending == 0
    assert central_events(tmp_path / "central.db") == device_events(tmp_path / "dev.db")
    assert col.stats.events == 30 and col.stats.duplicates >= 30


def test_report_by_device_label_day(tmp_path, capsys):
    col, conn = _collector(tmp_path)
    for i, (dev, label, day) in enumerate([("a", "dog", "01"), ("a", "dog", "02"), ("a", "rain", "02"),
                                           ("b", "dog", "02")]):
        msg = json.loads(_event(dev, i + 1, label, f"2026-05-{day}T10:00:00.000Z"))
        col.handle(conn, f"fieldear/{dev}/events", json.dumps({**msg, "backlog": 7 - i if dev == "a" else None}).encode())
    col.handle(conn, "fieldear/b/status", b"offline")
    col.handle(conn, "fieldear/c/health", json.dumps({"health_id": 1, "t_utc": "x", "health": {}}).encode())
    conn.close()
    db = str(tmp_path / "central.db")
    assert cli_main(["report", "--db", db, "--by", "device"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["device", "events", "labels", "first_event_utc", "last_event_utc", "health_msgs", "status",
                              "last_seen_utc", "backlog"]
    assert out[2].split() == ["a", "3", "2", "2026-05-01T10:00:00.000Z", "2026-05-02T10:00:00.000Z", "0",
                              "1970-01-01T00:01:40Z", "5"]  # the backlog its last message reported
    assert out[3].split()[:3] == ["b", "1", "1"] and out[3].split()[-2:] == ["offline", "1970-01-01T00:01:40Z"]
    assert out[4].split() == ["c", "0", "0", "1", "1970-01-01T00:01:40Z"]
    assert cli_main(["report", "--db", db, "--by", "label"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in out[2:]] == [["dog", "3", "2"], ["rain", "1", "1"]]
    assert cli_main(["report", "--db", db, "--by", "day"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split() for line in out[2:]] == [["2026-05-01", "1", "1", "1"], ["2026-05-02", "3", "2", "2"]]
    assert cli_main(["report", "--db", str(tmp_path / "missing.db")]) == 2
    assert "no central database" in capsys.readouterr().err


def test_collect_command_runs_until_sigterm(tmp_path, broker):
    from runtime.fleet.mqtt import MqttSettings, send_pending

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    db = tmp_path / "central.db"
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "collect", "--broker", broker.address, "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        assert wait_until(lambda: db.exists() and _subscribed(broker), 10)
        dev = make_device_db(tmp_path / "dev.db")
        for i in range(5):
            add_event(dev, "cli-1", "dog", float(i))
        send_pending(tmp_path / "dev.db", MqttSettings.from_config(None, broker.address), "cli-1", timeout_s=10)
        assert wait_until(lambda: len(central_events(db)) == 5, 10)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()
    assert b"collected 5 events" in out


def _subscribed(broker: Broker) -> bool:
    return broker.log_path.exists() and "fieldear-collector 1 fieldear/+/status" in broker.log_path.read_text()


def test_collect_with_a_bad_db_path_is_one_line(tmp_path, capsys):
    rc = cli_main(["collect", "--broker", "127.0.0.1:1", "--db", str(tmp_path / "no" / "such" / "central.db")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_report_rejects_unknown_grouping(tmp_path):
    from runtime.fleet.central.collector import open_central
    from runtime.fleet.central.report import report_rows

    open_central(tmp_path / "c.db").close()
    with pytest.raises(FieldearError, match="cannot report by"):
        report_rows(tmp_path / "c.db", "week")
    with sqlite3.connect(tmp_path / "c.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.slow
def test_fleet_bench_small(tmp_path, shared_data):
    """The must-show, smaller: three devices replay recordings concurrently (simulated devices: real Store +
    OutboxHook/MqttSink), one broker restarted in the middle, one collector: equal counts, no duplicates."""
    require_mosquitto()
    from tests.bench.bench_fleet import main as bench_main

    r = bench_main(tmp_path, mode="simulated", devices=3, seconds=60.0, speed=6.0, down_s=1.0)
    assert (tmp_path / "fleet.json").is_file()
    assert r["events_on_devices_total"] >= 12 and all(n > 0 for n in r["events_on_devices"].values())
    assert r["events_in_central"] == r["events_on_devices"] and r["equal"] is True
    assert r["duplicates_in_central"] == 0
    assert r["collector"]["connects"] == 2  # it really lost the broker in the middle
    assert all(d["connects"] >= 2 and d["drained"] for d in r["device_runs"].values())
    assert r["latency_ms"]["n"] == r["events_in_central_total"]
    assert 0 <= r["latency_ms"]["median"] <= r["latency_ms"]["p99"]
    assert r["health_in_central_total"] == r["health_on_devices_total"] > 0


def test_a_message_the_central_db_cannot_take_is_not_acknowledged(tmp_path, broker):
    """Central DB locked (or full): the collector drops the connection without PUBACK; the broker redelivers
    to its persistent session once it reconnects, and every event is stored once when the DB is back."""
    import threading

    from runtime.fleet.central.collector import Collector, open_central
    from runtime.fleet.mqtt import MqttSettings, send_pending

    db = make_device_db(tmp_path / "dev.db")
    for i in range(5):
        add_event(db, "lock-1", "dog", float(i))
    col = Collector(tmp_path / "central.db", MqttSettings.from_config(None, broker.address), backoff_s=(0.1, 0.3),
                    db_timeout_s=0.2)
    stop = threading.Event()
    th = threading.Thread(target=col.run, args=(stop,), daemon=True)
    th.start()
    try:
        assert col.subscribed.wait(10)
        blocker = open_central(tmp_path / "central.db")
        blocker.execute("BEGIN EXCLUSIVE")
        send_pending(tmp_path / "dev.db", MqttSettings.from_config(None, broker.address), "lock-1", timeout_s=10)
        assert wait_until(lambda: col.stats.db_errors >= 2, 10)  # failed to store, reconnected, again...
        assert col.stats.events == 0
        blocker.rollback()
        blocker.close()
        assert wait_until(lambda: col.stats.events == 5, 15)
    finally:
        stop.set()
        th.join(10)
    assert not th.is_alive()
    assert central_events(tmp_path / "central.db") == device_events(tmp_path / "dev.db")


def test_a_recreated_device_log_is_stored_beside_the_old_one(tmp_path, broker):
    """The issue's case: a device's log is deleted and recreated, its ids restart at 1. With generation ids the
    collector stores the new events (no conflicts), and each log's outbox empties on the collector's acks."""
    from runtime.fleet.mqtt import MqttSettings, send_pending
    from runtime.store.schema import connect

    settings = MqttSettings.from_config(None, broker.address)
    path = tmp_path / "dev.db"
    gens = []
    with CollectorThread(tmp_path / "central.db", broker.address) as col:
        for labels in (["dog", "rain", "dog"], ["rooster", "rooster"]):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            log = connect(path)
            gens.append(log.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
            assert [add_event(log, "re-1", label, float(i)) for i, label in enumerate(labels)] == \
                list(range(1, len(labels) + 1))
            log.close()
            result = send_pending(path, settings, "re-1", timeout_s=10)
            assert result.acked["events"] == len(labels) and result.status.total_pending == 0
        assert col.stats.conflicts == 0 and col.stats.events == 5
    assert gens[0] != gens[1]
    conn = sqlite3.connect(tmp_path / "central.db")
    assert conn.execute("SELECT generation, event_id, label FROM events ORDER BY received_ts, event_id").fetchall() == [
        (gens[0], 1, "dog"), (gens[0], 2, "rain"), (gens[0], 3, "dog"), (gens[1], 1, "rooster"), (gens[1], 2, "rooster")]
