"""The durable outbox: the device's own SQLite log is the queue of messages to send.

An event is written to the ``events`` table first (by the listener's store); this module only keeps
a cursor per stream in a table of its own, ``outbox_state(stream, last_id)``, in the same database
file. ``pending(conn, stream)`` returns the rows after the cursor in id order; ``mark_acked`` moves the
cursor, and is only called once **the collector** confirmed it stored the row (an ack message on
``<prefix>/<device>/ack``, see ``runtime.fleet.mqtt``), never on the broker's PUBACK alone: a broker that
crashes with messages in memory loses nothing the device considers done. A crash between the ack and
``mark_acked`` means the message is sent again: every message carries a stable, globally unique id
(``"<device_id>:<generation>:<event_id>"``) and the collector stores it once.

``generation`` is the log's generation id (``meta['generation']``, a uuid4 made once per log file by
``runtime.store.schema``): a recreated log restarts its row ids at 1 but gets a new generation, so its
rows never collide centrally with the old log's.

Streams: ``events`` (table ``events``), ``health`` (table ``health``) and ``reviews`` (table ``reviews``:
people's verdicts on events, written by `fieldear review` and `fieldear serve`). Ids are the tables'
``INTEGER PRIMARY KEY``; ``events`` uses AUTOINCREMENT, so ids are never reused even after retention
deletes the oldest rows (rows deleted before they were sent are skipped, not waited for). Retention
(``runtime.store.writer``) never deletes rows after the cursor: what is not acknowledged stays.

``OutboxHook`` plugs the sender (``runtime.fleet.mqtt.MqttSink``) into the ``Listener``: it only wakes
the sender thread, so the audio loop never waits for the network.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from runtime.listen.hooks import Hook
from runtime.store.schema import log_generation

log = logging.getLogger(__name__)

# stream name -> table holding its rows (written through runtime/store/)
STREAMS = {"events": "events", "health": "health", "reviews": "reviews"}

STATE_DDL = "CREATE TABLE IF NOT EXISTS outbox_state (stream TEXT PRIMARY KEY, last_id INTEGER NOT NULL)"


def connect(db_path: str | Path, timeout_s: float = 10.0) -> sqlite3.Connection:
    """A connection of the sender's own to the device log (WAL; waits for the writer, never blocks it long)."""
    conn = sqlite3.connect(str(db_path), timeout=timeout_s)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    # a cursor update lost to a power cut only means a resend (the collector ignores it): no fsync per ack
    conn.execute("PRAGMA synchronous = NORMAL")
    ensure_state(conn)
    return conn


def ensure_state(conn: sqlite3.Connection) -> None:
    conn.execute(STATE_DDL)
    conn.commit()


def generation(conn: sqlite3.Connection, factory=None) -> str:
    """The log's generation id (made now, once, if the log has none: a log older than schema 3)."""
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    return log_generation(conn, factory)


def _table(stream: str) -> str:
    try:
        return STREAMS[stream]
    except KeyError:
        raise ValueError(f"unknown outbox stream {stream!r} (known: {', '.join(STREAMS)})") from None


def _table_exists(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    return row is not None


def cursor(conn: sqlite3.Connection, stream: str) -> int:
    """The id of the last row of ``stream`` the collector acknowledged, with all before it (0 if none)."""
    _table(stream)
    if not _table_exists(conn, "outbox_state"):  # a read-only connection to a log that never reported
        return 0
    row = conn.execute("SELECT last_id FROM outbox_state WHERE stream = ?", (stream,)).fetchone()
    return int(row[0]) if row else 0


def pending(conn: sqlite3.Connection, stream: str, after: int | None = None, limit: int = 100) -> list[dict]:
    """Rows of ``stream`` not yet acknowledged by the collector, in id order (after ``after`` if given, else after
    the cursor)."""
    table = _table(stream)
    if not _table_exists(conn, table):
        return []
    start = cursor(conn, stream) if after is None else max(after, cursor(conn, stream))
    rows = conn.execute(f"SELECT * FROM {table} WHERE id > ? ORDER BY id LIMIT ?", (start, int(limit))).fetchall()
    return [dict(r) for r in rows]


def rows_by_id(conn: sqlite3.Connection, stream: str, ids: list[int]) -> list[dict]:
    """The rows of ``stream`` with these ids that still exist, in id order."""
    table = _table(stream)
    if not ids or not _table_exists(conn, table):
        return []
    marks = ", ".join("?" * len(ids))
    return [dict(r) for r in conn.execute(f"SELECT * FROM {table} WHERE id IN ({marks}) ORDER BY id",
                                          [int(i) for i in ids])]


def count_pending(conn: sqlite3.Connection, stream: str) -> int:
    table = _table(stream)
    if not _table_exists(conn, table):
        return 0
    row = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE id > ?", (cursor(conn, stream),)).fetchone()
    return int(row[0])


def oldest_pending_utc(conn: sqlite3.Connection, stream: str) -> str | None:
    """Time of the oldest row not acknowledged yet (``start_utc``/``t_utc``), None if nothing is pending."""
    table = _table(stream)
    if not _table_exists(conn, table):
        return None
    col = "start_utc" if stream == "events" else "t_utc"
    row = conn.execute(f"SELECT {col} FROM {table} WHERE id > ? ORDER BY id LIMIT 1", (cursor(conn, stream),)).fetchone()
    return row[0] if row else None


def mark_acked(conn: sqlite3.Connection, stream: str, row_id: int) -> None:
    """Move the cursor of ``stream`` to ``row_id`` (never backwards). Call only once the collector acknowledged
    ``row_id`` and every pending row before it."""
    _table(stream)
    conn.execute(
        "INSERT INTO outbox_state (stream, last_id) VALUES (?, ?) "
        "ON CONFLICT(stream) DO UPDATE SET last_id = MAX(last_id, excluded.last_id)",
        (stream, int(row_id)),
    )
    conn.commit()


mark_sent = mark_acked  # the name before end-to-end acknowledgement


@dataclass(frozen=True)
class OutboxStatus:
    """``cursors``: last id acknowledged by the collector per stream; ``pending``: rows not acknowledged yet (the
    backlog: never sent, or sent and not confirmed); ``oldest_utc``: time of the oldest pending row."""

    cursors: dict[str, int]
    pending: dict[str, int]
    oldest_utc: dict[str, str | None] = field(default_factory=dict)

    @property
    def total_pending(self) -> int:
        return sum(self.pending.values())


def status(conn: sqlite3.Connection) -> OutboxStatus:
    return OutboxStatus(
        cursors={s: cursor(conn, s) for s in STREAMS},
        pending={s: count_pending(conn, s) for s in STREAMS},
        oldest_utc={s: oldest_pending_utc(conn, s) for s in STREAMS},
    )


def backlog_summary(conn: sqlite3.Connection, now: float) -> dict | None:
    """For `fieldear status`: rows the collector has not acknowledged yet, and the age of the oldest; None if
    this log never reported (no ``outbox_state``). Works on a read-only connection."""
    if not _table_exists(conn, "outbox_state"):
        return None
    from runtime.store.schema import parse_utc

    st = status(conn)
    oldest = [t for t in st.oldest_utc.values() if t]
    oldest_utc = min(oldest) if oldest else None
    try:
        age = round(max(0.0, now - parse_utc(oldest_utc)), 1) if oldest_utc else None
    except ValueError:
        age = None
    return {"pending": dict(st.pending), "total": st.total_pending, "acked_up_to": dict(st.cursors),
            "oldest_utc": oldest_utc, "oldest_age_s": age}


def store_device_ids(conn: sqlite3.Connection) -> list[str]:
    """Distinct non-empty device ids found in the log (to default ``--device-id`` for ``outbox send``)."""
    ids: set[str] = set()
    for table in STREAMS.values():
        if _table_exists(conn, table):
            ids.update(r[0] for r in conn.execute(f"SELECT DISTINCT device_id FROM {table}") if r[0])
    return sorted(ids)


# ---- message payloads: what goes on the wire ----


def message_id(device_id: str, stream: str, row_id: int, generation: str | None = None) -> str:
    """The stable id of a message: ``"<device>:<generation>:<event_id>"`` for events,
    ``"<device>:<generation>:<stream>:<id>"`` otherwise (without the generation part if None)."""
    head = f"{device_id}:{generation}" if generation else device_id
    return f"{head}:{row_id}" if stream == "events" else f"{head}:{stream}:{row_id}"


def _maybe_json(text):
    if not isinstance(text, str) or not text:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def event_payload(row: dict, device_id: str, sent_ts: float, generation: str | None = None) -> dict:
    """JSON-able message for one ``events`` row. ``sent_ts`` (unix seconds) is the time of this send attempt;
    ``generation`` the log's generation id (the collector's key is device, generation, event_id)."""
    return {
        "id": message_id(device_id, "events", row["id"], generation),
        "device_id": device_id,
        "generation": generation,
        "event_id": row["id"],
        "label": row.get("label"),
        "start_utc": row.get("start_utc"),
        "end_utc": row.get("end_utc"),
        "start_s": row.get("start_s"),
        "end_s": row.get("end_s"),
        "peak": row.get("peak"),
        "mean": row.get("mean"),
        "model_sha": row.get("model_sha"),
        "source": row.get("source"),
        "settings": _maybe_json(row.get("settings_json")),
        "clip_path": row.get("clip_path"),
        "sent_ts": sent_ts,
    }


def health_payload(row: dict, device_id: str, sent_ts: float, generation: str | None = None) -> dict:
    return {
        "id": message_id(device_id, "health", row["id"], generation),
        "device_id": device_id,
        "generation": generation,
        "health_id": row["id"],
        "t_utc": row.get("t_utc"),
        "health": _maybe_json(row.get("json")),
        "sent_ts": sent_ts,
    }


def review_payload(row: dict, device_id: str, sent_ts: float, generation: str | None = None) -> dict:
    return {
        "id": message_id(device_id, "reviews", row["id"], generation),
        "device_id": device_id,
        "generation": generation,
        "review_id": row["id"],
        "event_id": row.get("event_id"),
        "verdict": row.get("verdict"),
        "label": row.get("label"),
        "t_utc": row.get("t_utc"),
        "reviewer": row.get("reviewer"),
        "sent_ts": sent_ts,
    }


PAYLOADS = {"events": event_payload, "health": health_payload, "reviews": review_payload}


class OutboxHook(Hook):
    """Listener hook: runs an ``MqttSink`` sender thread beside the audio loop.

    ``on_event``/``on_tick`` only wake the sender; ``on_stop`` drains for at most ``drain_timeout_s``
    (0: don't wait) and stops the thread. Nothing here touches the network in the caller's thread.
    """

    def __init__(self, sink, drain_timeout_s: float = 0.0):
        self.sink = sink
        self.drain_timeout_s = float(drain_timeout_s)
        self.drained: bool | None = None

    def on_start(self, listener) -> None:
        self.sink.start()

    def on_event(self, listener, event_row) -> None:
        self.sink.notify()

    def on_tick(self, listener, now) -> None:
        self.sink.notify()  # health rows written by the field hooks

    def on_stop(self, listener) -> None:
        try:
            if self.drain_timeout_s > 0:
                self.drained = self.sink.drain(self.drain_timeout_s)
                if not self.drained:
                    st = self.sink.outbox_status()
                    log.warning(
                        "outbox not drained within %.1f s: %d events and %d health rows stay pending "
                        "(sent later by `fieldear listen` or `fieldear outbox send`)",
                        self.drain_timeout_s, st.pending["events"], st.pending["health"],
                    )
        finally:
            self.sink.stop()
