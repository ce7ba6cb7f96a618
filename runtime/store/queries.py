"""Every read of the device log: events, windows, health, runs, and the outbox cursor."""

from __future__ import annotations

import json
import logging
import sqlite3

from runtime.errors import FieldearError
from runtime.store.schema import EVENT_COLUMNS, TABLE_COLUMNS, parse_utc, utc_iso

log = logging.getLogger(__name__)


def parse_since(text: str, now: float) -> float:
    """``90s``, ``30m``, ``1h``, ``2d``, ``1w`` ago, or an ISO date/time -> Unix seconds."""
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if text and text[-1] in units:
        try:
            return now - float(text[:-1]) * units[text[-1]]
        except ValueError:
            pass
    try:
        return parse_utc(text)
    except ValueError:
        raise FieldearError(f"cannot read --since {text!r}", "use e.g. 30m, 1h, 2d or 2026-05-01T04:00") from None


def query(conn: sqlite3.Connection, table: str, since_utc: float | None = None, label: str | None = None,
          limit: int | None = None, after_id: int | None = None):
    """Rows of ``table`` in id order (as sqlite3.Row), optionally from a time or id on."""
    if table not in TABLE_COLUMNS:
        raise FieldearError(f"unknown table {table!r}", f"choose one of {', '.join(TABLE_COLUMNS)}")
    tcol = {"events": "start_utc", "windows": "t_utc", "health": "t_utc"}[table]
    where, args = [], []
    if since_utc is not None:
        where.append(f"{tcol} >= ?")
        args.append(utc_iso(since_utc))
    if label is not None and table != "health":
        where.append("label = ?" if table == "events" else "top_label = ?")
        args.append(label)
    if after_id is not None:
        where.append("id > ?")
        args.append(int(after_id))
    sql = f"SELECT {', '.join(TABLE_COLUMNS[table])} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id"
    if limit is not None:
        sql = f"SELECT * FROM ({sql.replace(' ORDER BY id', ' ORDER BY id DESC')} LIMIT {int(limit)}) ORDER BY id"
    return conn.execute(sql, args)


def runs(conn: sqlite3.Connection) -> list[dict]:
    """The run records in meta, oldest first."""
    out = []
    for row in conn.execute("SELECT key, value FROM meta WHERE key LIKE 'run:%' ORDER BY key"):
        try:
            out.append({"key": row[0], **json.loads(row[1])})
        except json.JSONDecodeError:
            continue
    return out


def find_run(conn: sqlite3.Connection, run: str | int | None = None, where: str = "the log") -> dict:
    """One run record: ``run`` as ``run:000003``, ``3`` or None (the latest); {} when the log has none."""
    records = runs(conn)
    if not records:
        return {}
    if run is None:
        return records[-1]
    text = str(run)
    key = text if text.startswith("run:") else f"run:{int(text):06d}"
    found = next((r for r in records if r["key"] == key), None)
    if found is None:
        raise FieldearError(f"{where}: no run {run}", f"runs: {', '.join(r['key'] for r in records)}")
    return found


def run_events(conn: sqlite3.Connection, record: dict | None = None) -> list[sqlite3.Row]:
    """The events of one run (all events when ``record`` is empty), ordered by stream time."""
    sql, params = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events", []
    if record:
        sql += " WHERE id >= ?"
        params.append(record["first_event_id"])
        later = [r["first_event_id"] for r in runs(conn) if r["first_event_id"] > record["first_event_id"]]
        if later:
            sql += " AND id < ?"
            params.append(min(later))
    return conn.execute(sql + " ORDER BY start_s, id", params).fetchall()


def stream_end_s(conn: sqlite3.Connection) -> float:
    """The latest block end offset logged (a run's duration when its record has none)."""
    row = conn.execute("SELECT MAX(end_s) FROM windows").fetchone()
    return float(row[0] or 0.0)


def latest_health(conn: sqlite3.Connection) -> dict | None:
    """The newest heartbeat (its JSON, plus ``t_utc``), or None."""
    row = conn.execute("SELECT t_utc, json FROM health ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return {**json.loads(row["json"]), "t_utc": row["t_utc"]}


def latest_event(conn: sqlite3.Connection) -> dict | None:
    row = conn.execute("SELECT id, label, start_utc, end_utc, peak, source FROM events ORDER BY id DESC LIMIT 1").fetchone()
    return dict(row) if row is not None else None


def count_rows(conn: sqlite3.Connection, table: str) -> int:
    if table not in TABLE_COLUMNS:
        raise FieldearError(f"unknown table {table!r}", f"choose one of {', '.join(TABLE_COLUMNS)}")
    return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
