"""Every read of the device log: events, windows, health, runs, and the outbox cursor."""

from __future__ import annotations

import json
import logging
import sqlite3

from runtime.errors import FieldearError
from runtime.store.schema import TABLE_COLUMNS, parse_utc, utc_iso

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
