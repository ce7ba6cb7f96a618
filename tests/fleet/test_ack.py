"""End-to-end acknowledgement without a network: the collector's acks and generation keys, the sender's cursor
and re-sends (fake client, injected timer), and the upgrade of an older central database."""

from __future__ import annotations

import json
import sqlite3

import pytest

from runtime.fleet import outbox
from tests.fleet.broker import add_event, add_health, make_device_db

pytest.importorskip("paho.mqtt.client")


def _event(device, event_id, generation=None, label="dog", start_utc="2026-05-01T04:12:07.250Z", **extra) -> bytes:
    msg = {"device_id": device, "event_id": event_id, "label": label, "start_utc": start_utc, "end_utc": start_utc,
           "start_s": 1.0, "end_s": 2.0, "peak": 0.9, "mean": 0.8, "sent_ts": 99.0, **extra}
    if generation is not None:
        msg["generation"] = generation
    return json.dumps(msg).encode()


def _collector(tmp_path):
    from runtime.fleet.central.collector import Collector, open_central
    from runtime.fleet.mqtt import MqttSettings

    col = Collector(tmp_path / "central.db", MqttSettings(host="127.0.0.1"), clock=lambda: 100.0)
    return col, open_central(tmp_path / "central.db")


def test_a_recreated_log_never_collides_and_duplicates_are_acked_again(tmp_path):
    col, conn = _collector(tmp_path)
    assert col.handle(conn, "fieldear/d1/events", _event("d1", 1, "g-old")) == "stored"
    assert col.handle(conn, "fieldear/d1/events", _event("d1", 2, "g-old", backlog=7)) == "stored"
    # the log was recreated: ids from 1 again, other content, a new generation -> new rows, no conflict
    assert col.handle(conn, "fieldear/d1/events", _event("d1", 1, "g-new", label="rain")) == "stored"
    assert col.handle(conn, "fieldear/d1/events", _event("d1", 1, "g-new", label="rain")) == "duplicate"
    assert col.handle(conn, "fieldear/d1/health", json.dumps({"health_id": 1, "generation": "g-new"}).encode()) == "stored"
    review = {"review_id": 1, "event_id": 1, "verdict": "confirm", "label": "rain", "generation": "g-new"}
    assert col.handle(conn, "fieldear/d1/reviews", json.dumps(review).encode()) == "stored"
    assert col.handle(conn, "fieldear/d1/events", b"{bad") == "rejected"  # nothing to acknowledge
    assert conn.execute("SELECT generation, event_id, label FROM events ORDER BY generation, event_id").fetchall() == [
        ("g-new", 1, "rain"), ("g-old", 1, "dog"), ("g-old", 2, "dog")]
    assert (col.stats.events, col.stats.duplicates, col.stats.conflicts) == (3, 1, 0)
    acks = dict((json.dumps(p["generation"]), (t, p)) for t, p in col.take_acks())
    assert acks['"g-old"'] == ("fieldear/d1/ack", {"generation": "g-old", "events": [1, 2]})
    assert acks['"g-new"'] == ("fieldear/d1/ack", {"generation": "g-new", "events": [1], "health": [1],
                                                   "reviews": [1]})
    assert col.take_acks() == []  # taken once
    assert conn.execute("SELECT device_id, generation, last_seen_ts, backlog FROM devices").fetchall() == [
        ("d1", "g-new", 100.0, 7)]


def test_an_event_stored_before_its_log_had_a_generation_is_not_stored_twice(tmp_path):
    """Sent by an old device (no generation), the log upgraded to schema 3 before the ack: re-sent with one."""
    col, conn = _collector(tmp_path)
    assert col.handle(conn, "fieldear/d1/events", _event("d1", 5)) == "stored"
    assert col.handle(conn, "fieldear/d1/events", _event("d1", 5, "g1")) == "duplicate"
    assert col.handle(conn, "fieldear/d1/events", _event("d1", 6, "g1")) == "stored"
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2
    # acks only for the generation: a device without one does not read them
    assert {p["generation"]: p["events"] for _, p in col.take_acks()} == {"g1": [5, 6]}


def test_a_central_database_from_before_generations_is_upgraded_in_place(tmp_path):
    from runtime.fleet.central.collector import open_central

    path = tmp_path / "central.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE events (device_id TEXT NOT NULL, event_id INTEGER NOT NULL, label TEXT, start_utc, end_utc,
            start_s REAL, end_s REAL, peak REAL, mean REAL, model_sha TEXT, source TEXT, settings_json TEXT,
            clip_path TEXT, sent_ts REAL, received_ts REAL NOT NULL, UNIQUE(device_id, event_id));
        CREATE TABLE health (device_id TEXT NOT NULL, health_id INTEGER NOT NULL, t_utc, json TEXT,
            received_ts REAL NOT NULL, UNIQUE(device_id, health_id));
        CREATE TABLE reviews (device_id TEXT NOT NULL, review_id INTEGER NOT NULL, event_id INTEGER NOT NULL,
            verdict TEXT NOT NULL, label TEXT, t_utc TEXT, reviewer TEXT, received_ts REAL NOT NULL,
            UNIQUE(device_id, review_id));
        CREATE INDEX events_received ON events(received_ts);
        INSERT INTO events (device_id, event_id, label, start_utc, received_ts) VALUES ('d1', 1, 'dog', 'x', 1.0);
        INSERT INTO health (device_id, health_id, received_ts) VALUES ('d1', 1, 1.0);
    """)
    old.close()
    conn = open_central(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT device_id, generation, event_id, label FROM events").fetchall() == [("d1", "", 1, "dog")]
    assert conn.execute("SELECT generation, health_id FROM health").fetchall() == [("", 1)]
    conn.execute("INSERT INTO events (device_id, generation, event_id, received_ts) VALUES ('d1', 'g', 1, 2.0)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO events (device_id, generation, event_id, received_ts) VALUES ('d1', 'g', 1, 2.0)")
    conn.commit()
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master")} >= {"events_received", "devices"}
    conn.close()
    open_central(path).close()  # opening again changes nothing


class FakeInfo:
    rc = 0


class FakeClient:
    def __init__(self):
        self.sent: list[tuple[str, dict]] = []

    def publish(self, topic, payload, qos=0, retain=False):
        assert qos == 1
        self.sent.append((topic, json.loads(payload)))
        return FakeInfo()


class Timer:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _sender(tmp_path, window=3, ack_timeout_s=30.0):
    from runtime.fleet.mqtt import OutboxSender, Topics

    conn = outbox.connect(tmp_path / "dev.db")
    client, timer = FakeClient(), Timer()
    sender = OutboxSender(conn, client, Topics("fieldear", "d1"), clock=lambda: 5.0, window=window,
                          ack_timeout_s=ack_timeout_s, timer=timer, generation="g1")
    return sender, client, timer, conn


def _ack(generation="g1", **streams) -> bytes:
    return json.dumps({"generation": generation, **streams}).encode()


def test_the_cursor_moves_only_on_the_collectors_acks_in_order(tmp_path):
    db = make_device_db(tmp_path / "dev.db")
    ids = [add_event(db, "d1", "dog", float(i)) for i in range(5)]
    hid = add_health(db, "d1", {"ok": 1})
    sender, client, timer, conn = _sender(tmp_path)
    sender.step()
    assert [m["event_id"] for t, m in client.sent if t == "fieldear/d1/events"] == ids[:3]  # window 3
    assert [m["backlog"] for t, m in client.sent if t == "fieldear/d1/events"] == [5, 5, 5]
    assert outbox.cursor(conn, "events") == 0  # published (even PUBACKed) is not acknowledged
    # an ack of the 2nd before the 1st: nothing moves (the cursor means "this and everything before")
    assert sender.on_ack(_ack(events=[ids[1]])) == 1
    sender.step()
    assert outbox.cursor(conn, "events") == 0 and len(client.sent) == 4  # (3 events + the health row)
    assert sender.on_ack(_ack(events=[ids[0]], health=[hid])) == 2
    sender.step()
    assert outbox.cursor(conn, "events") == ids[1] and outbox.cursor(conn, "health") == hid
    assert [m["event_id"] for t, m in client.sent if t == "fieldear/d1/events"] == ids  # the window moved on
    # acks for another log generation (an older log of this device), unknown ids, garbage: ignored
    assert sender.on_ack(_ack("g0", events=ids)) == 0
    assert sender.on_ack(_ack(events=[999])) == 0
    assert sender.on_ack(b"not json") == 0
    assert sender.acks_ignored == 2
    sender.step()
    assert outbox.cursor(conn, "events") == ids[1]
    assert sender.on_ack(_ack(events=ids[2:])) == 3
    sender.step()
    assert outbox.cursor(conn, "events") == ids[-1] and not sender.busy
    assert outbox.status(conn).total_pending == 0 and sender.acked == {"events": 5, "health": 1, "reviews": 0}


def test_what_is_not_acknowledged_within_the_timeout_is_sent_again_in_order(tmp_path):
    db = make_device_db(tmp_path / "dev.db")
    ids = [add_event(db, "d1", "dog", float(i)) for i in range(4)]
    sender, client, timer, conn = _sender(tmp_path, window=4, ack_timeout_s=10.0)
    sender.step()
    assert len(client.sent) == 4
    sender.on_ack(_ack(events=[ids[2]]))  # only the 3rd made it
    timer.t += 9.9
    sender.step()
    assert len(client.sent) == 4  # not yet
    timer.t += 0.2
    sender.step()
    again = [m["event_id"] for _, m in client.sent[4:]]
    assert again == [ids[0], ids[1], ids[3]]  # every unacknowledged one, in id order; not the acked one
    assert sender.resent["events"] == 3 and sender.published["events"] == 7
    sender.step()
    assert len(client.sent) == 7  # the timer restarted for the re-sent ones
    sender.on_ack(_ack(events=[ids[0], ids[1], ids[3]]))
    sender.step()
    assert outbox.cursor(conn, "events") == ids[-1] and not sender.busy
    # a row deleted (retention) while waiting for its ack is not waited for
    more = [add_event(db, "d1", "dog", 9.0 + i) for i in range(2)]
    sender.step()
    db.execute("DELETE FROM events WHERE id = ?", (more[0],))
    db.commit()
    sender.on_ack(_ack(events=[more[1]]))
    timer.t += 11
    sender.step()
    sender.step()
    assert outbox.cursor(conn, "events") == more[1] and not sender.busy
