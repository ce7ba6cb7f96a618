"""The durable outbox: cursor semantics, and delivery through a real Mosquitto across outages."""

from __future__ import annotations

import json
import time

import pytest

from runtime.cli.main import main as cli_main
from runtime.fleet import outbox
from tests.fleet.broker import (
    Broker,
    CollectorThread,
    add_event,
    add_health,
    central_events,
    device_events,
    make_device_db,
    require_mosquitto,
    wait_until,
)

pytest.importorskip("paho.mqtt.client")


def test_pending_in_id_order_after_cursor(tmp_path):
    db = make_device_db(tmp_path / "dev.db")
    ids = [add_event(db, "d1", label, float(i)) for i, label in enumerate(["dog", "rain", "dog", "rooster"])]
    conn = outbox.connect(tmp_path / "dev.db")
    assert [r["id"] for r in outbox.pending(conn, "events")] == ids
    outbox.mark_sent(conn, "events", ids[1])
    assert [r["id"] for r in outbox.pending(conn, "events")] == ids[2:]
    assert [r["label"] for r in outbox.pending(conn, "events")] == ["dog", "rooster"]
    assert outbox.pending(conn, "events", limit=1)[0]["id"] == ids[2]
    # the cursor never goes backwards (a late ack of an older message after a resend)
    outbox.mark_sent(conn, "events", ids[0])
    assert outbox.cursor(conn, "events") == ids[1]
    assert outbox.status(conn).pending == {"events": 2, "health": 0, "reviews": 0}
    # a new writer row appears after the cursor
    new = add_event(db, "d1", "dog", 9.0)
    assert [r["id"] for r in outbox.pending(conn, "events")] == [ids[2], ids[3], new]
    with pytest.raises(ValueError):
        outbox.pending(conn, "windows")


def test_rows_deleted_by_retention_are_skipped_not_waited_for(tmp_path):
    db = make_device_db(tmp_path / "dev.db")
    ids = [add_event(db, "d1", "dog", float(i)) for i in range(5)]
    db.execute("DELETE FROM events WHERE id <= ?", (ids[2],))
    db.commit()
    conn = outbox.connect(tmp_path / "dev.db")
    assert [r["id"] for r in outbox.pending(conn, "events")] == ids[3:]


def test_empty_log_without_tables_has_nothing_pending(tmp_path):
    conn = outbox.connect(tmp_path / "new.db")
    assert outbox.pending(conn, "events") == [] and outbox.count_pending(conn, "health") == 0
    assert outbox.store_device_ids(conn) == []


def test_payloads_carry_stable_ids(tmp_path):
    db = make_device_db(tmp_path / "dev.db")
    eid = add_event(db, "d1", "dog", 3.5)
    hid = add_health(db, "d1", {"rss_mb": 41.5})
    conn = outbox.connect(tmp_path / "dev.db")
    gen = outbox.generation(conn)
    assert len(gen) == 32 and outbox.generation(conn) == gen  # made once, then kept
    ev = outbox.event_payload(outbox.pending(conn, "events")[0], "field-03", 1000.0, gen)
    assert ev["id"] == f"field-03:{gen}:{eid}" and ev["generation"] == gen
    assert outbox.event_payload(outbox.pending(conn, "events")[0], "field-03", 1000.0)["id"] == f"field-03:{eid}"
    assert ev["event_id"] == eid and ev["label"] == "dog"
    assert ev["settings"] == {"smoothing": 3} and ev["start_s"] == 3.5 and ev["sent_ts"] == 1000.0
    h = outbox.health_payload(outbox.pending(conn, "health")[0], "field-03", 1000.0)
    assert h["id"] == f"field-03:health:{hid}" and h["health"] == {"rss_mb": 41.5}
    from runtime.store.reviews import Review, add_review

    rid = add_review(db, Review(eid, "relabel", "ana", "background"), clock=lambda: 0.0)["id"]
    r = outbox.review_payload(outbox.pending(conn, "reviews")[0], "field-03", 1000.0)
    assert r["id"] == f"field-03:reviews:{rid}" and (r["event_id"], r["verdict"], r["label"]) == (eid, "relabel", "background")
    assert r["reviewer"] == "ana" and r["t_utc"] == "1970-01-01T00:00:00.000Z"
    json.dumps(ev), json.dumps(h), json.dumps(r)
    assert outbox.store_device_ids(conn) == ["d1"]


def test_broker_restart_in_the_middle_of_sending_exactly_once(tmp_path, broker):
    """A device writes events at a steady pace; the broker goes away for a while in the middle and comes back:
    the collector ends with exactly the device's events (nothing missing, nothing twice), in id order per send."""
    from runtime.fleet.mqtt import MqttSettings, MqttSink

    db = make_device_db(tmp_path / "dev.db")
    settings = MqttSettings.from_config(None, broker.address)
    sink = MqttSink(tmp_path / "dev.db", settings, "dev-a", backoff_s=(0.1, 0.5), window=5)
    n = 120
    with CollectorThread(tmp_path / "central.db", broker.address) as col:
        sink.start()
        assert sink.connected.wait(10)
        for i in range(n):
            add_event(db, "dev-a", ["dog", "rain", "rooster"][i % 3], float(i))
            sink.notify()
            if i == n // 3:
                broker.stop()  # mid-stream: some messages are in flight, unacknowledged
            if i == n // 2:
                assert not sink.connected.is_set()
                broker.start()
            time.sleep(0.01)
        assert sink.drain(20), outbox.status(outbox.connect(tmp_path / "dev.db"))
        # a backlog: the broker goes away while the sender is half-way through it (messages in flight)
        backlog = 3000
        db.executemany(
            "INSERT INTO events (label, start_utc, end_utc, start_s, end_s, peak, mean, device_id) "
            "VALUES ('dog', '2026-05-01T04:12:07.250Z', '2026-05-01T04:12:08.250Z', ?, ?, 0.9, 0.8, 'dev-a')",
            [(float(i), i + 1.0) for i in range(backlog)],
        )
        db.commit()
        last = db.execute("SELECT MAX(id) FROM events").fetchone()[0]
        sink.notify()
        state = outbox.connect(tmp_path / "dev.db")
        assert wait_until(lambda: outbox.cursor(state, "events") > n + 100, 10, step_s=0.002)
        broker.stop()
        cursor_at_stop = outbox.cursor(state, "events")
        assert cursor_at_stop < last  # stopped in the middle of the backlog
        time.sleep(0.5)
        broker.start()
        n += backlog
        assert sink.drain(30), outbox.status(state)
        assert wait_until(lambda: col.stats.events >= n, 10)
        time.sleep(0.3)  # anything still on its way would show up as an extra row
        sink.stop()
    assert broker.starts == 3 and sink.connects >= 3
    assert central_events(tmp_path / "central.db") == device_events(tmp_path / "dev.db")
    assert len(central_events(tmp_path / "central.db")) == n


def test_broker_down_for_the_whole_run_loses_nothing(tmp_path):
    require_mosquitto()
    from runtime.fleet.mqtt import MqttSettings, MqttSink

    b = Broker(tmp_path / "broker")  # configured, not started: nothing listens on its port
    db = make_device_db(tmp_path / "dev.db")
    sink = MqttSink(tmp_path / "dev.db", MqttSettings.from_config(None, b.address), "dev-b", backoff_s=(0.05, 0.2))
    sink.start()
    for i in range(25):
        add_event(db, "dev-b", "dog", float(i))
        sink.notify()
    add_health(db, "dev-b", {"ok": True})
    t0 = time.monotonic()
    assert sink.drain(1.0) is False
    assert time.monotonic() - t0 < 3.0  # bounded
    sink.stop()
    assert sink.connects == 0
    conn = outbox.connect(tmp_path / "dev.db")
    from runtime.store.reviews import Review, add_review

    add_review(db, Review(1, "reject", "ana"), clock=lambda: 1000.0)
    add_review(db, Review(2, "relabel", "ana", "rain"), clock=lambda: 1001.0)
    assert outbox.status(conn).pending == {"events": 25, "health": 1, "reviews": 2}

    # the broker is reachable later: `outbox send` delivers everything, once
    with b, CollectorThread(tmp_path / "central.db", b.address) as col:
        assert cli_main(["outbox", "send", "--db", str(tmp_path / "dev.db"), "--mqtt", b.address, "--timeout", "10"]) == 0
        assert wait_until(lambda: col.stats.events == 25 and col.stats.health == 1 and col.stats.reviews == 2, 10)
        # a second run has nothing to send
        assert cli_main(["outbox", "send", "--db", str(tmp_path / "dev.db"), "--mqtt", b.address]) == 0
        time.sleep(0.2)
    assert outbox.status(conn).pending == {"events": 0, "health": 0, "reviews": 0}
    assert central_events(tmp_path / "central.db") == device_events(tmp_path / "dev.db")
    import sqlite3

    central = sqlite3.connect(tmp_path / "central.db")
    assert central.execute("SELECT device_id, event_id, verdict, label, reviewer FROM reviews ORDER BY review_id"
                           ).fetchall() == [("dev-b", 1, "reject", "background", "ana"), ("dev-b", 2, "relabel", "rain", "ana")]


def test_outbox_send_with_broker_unreachable_says_what_stays_pending(tmp_path, capsys):
    require_mosquitto()
    b = Broker(tmp_path / "broker")
    db = make_device_db(tmp_path / "dev.db")
    add_event(db, "dev-c", "dog", 1.0)
    t0 = time.monotonic()
    rc = cli_main(["outbox", "send", "--db", str(tmp_path / "dev.db"), "--mqtt", b.address, "--timeout", "3"])
    assert rc == 2 and time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert "cannot reach MQTT broker" in err and "1 events, 0 health rows and 0 reviews stay pending" in err
    assert len(err.strip().splitlines()) == 1
    assert cli_main(["outbox", "status", "--db", str(tmp_path / "dev.db")]) == 0
    assert "events   acknowledged up to id 0, pending 1, oldest 2026-05-01T04:12:07.250Z" in capsys.readouterr().out


def test_outbox_hook_drains_at_stop_and_never_blocks_the_caller(tmp_path, broker):
    from runtime.fleet.mqtt import MqttSettings, MqttSink

    db = make_device_db(tmp_path / "dev.db")
    sink = MqttSink(tmp_path / "dev.db", MqttSettings.from_config(None, broker.address), "dev-h", backoff_s=(0.1, 0.5))
    hook = outbox.OutboxHook(sink, drain_timeout_s=10)
    with CollectorThread(tmp_path / "central.db", broker.address) as col:
        hook.on_start(None)
        slowest = 0.0
        for i in range(40):
            row_id = add_event(db, "dev-h", "dog", float(i))
            t0 = time.perf_counter()
            hook.on_event(None, {"id": row_id})
            hook.on_tick(None, time.time())
            slowest = max(slowest, time.perf_counter() - t0)
        hook.on_stop(None)
        assert hook.drained is True
        assert wait_until(lambda: col.stats.events == 40, 5)
    assert slowest < 0.05  # hooks only wake the sender thread
    assert not sink.connected.is_set()  # on_stop closed the connection


def test_outbox_hook_drain_is_bounded_when_the_broker_is_down(tmp_path):
    require_mosquitto()
    from runtime.fleet.mqtt import MqttSettings, MqttSink

    b = Broker(tmp_path / "broker")
    db = make_device_db(tmp_path / "dev.db")
    sink = MqttSink(tmp_path / "dev.db", MqttSettings.from_config(None, b.address), "dev-h", backoff_s=(0.1, 0.5))
    hook = outbox.OutboxHook(sink, drain_timeout_s=0.5)
    hook.on_start(None)
    add_event(db, "dev-h", "dog", 0.0)
    t0 = time.monotonic()
    hook.on_stop(None)
    assert hook.drained is False and time.monotonic() - t0 < 6.0
    assert outbox.status(outbox.connect(tmp_path / "dev.db")).pending["events"] == 1


def test_status_shows_the_unacknowledged_backlog(tmp_path):
    """`fieldear status`: the rows the collector has not acknowledged, and how old the oldest is."""
    from runtime.field.status import collect_status, format_status
    from runtime.store.schema import parse_utc

    db = make_device_db(tmp_path / "dev.db")
    s = collect_status(tmp_path / "dev.db", now=0.0, state="active")
    assert s["outbox"] is None and "outbox:" not in format_status(s)  # never reported: no outbox line
    ids = [add_event(db, "d1", "dog", float(i), t_utc=f"2026-05-01T04:0{i}:00.000Z") for i in range(3)]
    add_health(db, "d1", {"ok": 1})
    conn = outbox.connect(tmp_path / "dev.db")
    outbox.mark_acked(conn, "events", ids[0])
    now = parse_utc("2026-05-01T06:01:00.000Z")
    s = collect_status(tmp_path / "dev.db", now=now, state="active")
    assert s["outbox"]["pending"] == {"events": 2, "health": 1, "reviews": 0} and s["outbox"]["total"] == 3
    assert s["outbox"]["acked_up_to"]["events"] == ids[0] and s["outbox"]["oldest_utc"] == "2026-05-01T04:01:00.000Z"
    text = format_status(s)
    assert "outbox:     3 not acknowledged by the collector (2 events, 1 health, 0 reviews)" in text
    assert "outbox: 3 rows not acknowledged by the collector, the oldest from 2.0 h ago" in s["problems"]
    for stream, last in (("events", ids[-1]), ("health", 1)):
        outbox.mark_acked(conn, stream, last)
    s = collect_status(tmp_path / "dev.db", now=now, state="active")
    assert "outbox:     empty (the collector acknowledged everything)" in format_status(s)
    assert not any(p.startswith("outbox") for p in s["problems"])
