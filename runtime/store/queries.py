"""Every read of the device log: events, windows, health, runs, reviews, and the outbox cursor."""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass

from runtime.errors import FieldearError
from runtime.store.schema import (
    EVENT_COLUMNS,
    TABLE_COLUMNS,
    has_table,
    parse_utc,
    utc_iso,
)

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
    if not has_table(conn, table):  # a read-only look at a log older than the table
        return conn.execute("SELECT NULL LIMIT 0")
    tcol = {"events": "start_utc", "windows": "t_utc", "health": "t_utc", "reviews": "t_utc"}[table]
    where, args = [], []
    if since_utc is not None:
        where.append(f"{tcol} >= ?")
        args.append(utc_iso(since_utc))
    if label is not None and table != "health":
        where.append("top_label = ?" if table == "windows" else "label = ?")
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


# ---------------------------------------------------------------- reviews

# The newest review of each event (reviews are insert-only: the latest row is the verdict).
_LATEST_REVIEW = ("SELECT r.event_id, r.verdict, r.label AS review_label, r.reviewer, r.t_utc AS reviewed_utc "
                  "FROM reviews r JOIN (SELECT MAX(id) AS id FROM reviews GROUP BY event_id) m ON r.id = m.id")

REVIEW_STATES = ("any", "unreviewed", "reviewed", "confirm", "reject", "relabel")


@dataclass(frozen=True)
class EventFilter:
    """What the detections page and ``/api/events`` ask for: newest first, ``limit`` rows from ``offset``."""

    label: str | None = None
    day: str | None = None  # YYYY-MM-DD (UTC)
    min_score: float | None = None  # on the event's peak
    review: str = "any"  # one of REVIEW_STATES
    limit: int = 100
    offset: int = 0

    def where(self) -> tuple[list[str], list]:
        if self.review not in REVIEW_STATES:
            raise FieldearError(f"unknown review state {self.review!r}", f"use one of {', '.join(REVIEW_STATES)}")
        clauses, args = [], []
        if self.label:
            clauses.append("e.label = ?")
            args.append(self.label)
        if self.day:
            clauses.append("substr(e.start_utc, 1, 10) = ?")
            args.append(self.day)
        if self.min_score is not None:
            clauses.append("e.peak >= ?")
            args.append(float(self.min_score))
        if self.review == "unreviewed":
            clauses.append("lr.verdict IS NULL")
        elif self.review == "reviewed":
            clauses.append("lr.verdict IS NOT NULL")
        elif self.review != "any":
            clauses.append("lr.verdict = ?")
            args.append(self.review)
        return clauses, args


def _reviews_join(conn: sqlite3.Connection) -> str:
    if has_table(conn, "reviews"):
        return f"LEFT JOIN ({_LATEST_REVIEW}) lr ON lr.event_id = e.id"
    return ("LEFT JOIN (SELECT NULL AS event_id, NULL AS verdict, NULL AS review_label, NULL AS reviewer, "
            "NULL AS reviewed_utc) lr ON 0")


def reviewed_events(conn: sqlite3.Connection, flt: EventFilter = EventFilter()) -> list[dict]:
    """Events with their latest review (``verdict``, ``review_label``, ``reviewer``, ``reviewed_utc``: None
    when unreviewed), filtered, newest first."""
    clauses, args = flt.where()
    cols = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
    sql = (f"SELECT {cols}, lr.verdict, lr.review_label, lr.reviewer, lr.reviewed_utc FROM events e "
           f"{_reviews_join(conn)}")
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY e.id DESC LIMIT ? OFFSET ?"
    return [dict(r) for r in conn.execute(sql, [*args, int(flt.limit), int(flt.offset)])]


def count_events(conn: sqlite3.Connection, flt: EventFilter = EventFilter()) -> int:
    clauses, args = flt.where()
    sql = f"SELECT COUNT(*) FROM events e {_reviews_join(conn)}"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    return int(conn.execute(sql, args).fetchone()[0])


def event_by_id(conn: sqlite3.Connection, event_id: int) -> dict | None:
    row = conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE id = ?", (int(event_id),)).fetchone()
    return dict(row) if row is not None else None


def reviews_of(conn: sqlite3.Connection, event_id: int) -> list[dict]:
    """Every review of one event, oldest first."""
    if not has_table(conn, "reviews"):
        return []
    cols = ", ".join(TABLE_COLUMNS["reviews"])
    return [dict(r) for r in conn.execute(f"SELECT {cols} FROM reviews WHERE event_id = ? ORDER BY id", (int(event_id),))]


def reviewed_clips(conn: sqlite3.Connection) -> list[dict]:
    """What training from corrections needs: one row per reviewed event (its latest verdict), oldest first.

    Each row: ``event_id``, ``event_label`` (what the model said), ``verdict`` (confirm, reject, relabel),
    ``label`` (what the clip is: the event's label, "background", or the new label), ``clip_path`` (relative to
    the log's directory, None when no clip was saved or it was deleted by the quota), ``start_utc``, ``end_utc``,
    ``start_s``, ``end_s``, ``peak``, ``model_sha``, ``reviewer``, ``reviewed_utc``, ``clip_start_s`` (where
    the clip starts in the stream; None for clips of logs before schema 4).
    """
    if not has_table(conn, "reviews"):
        return []
    clips = has_table(conn, "clips")
    sql = ("SELECT e.id AS event_id, e.label AS event_label, lr.verdict, lr.review_label AS label, e.clip_path, "
           "e.start_utc, e.end_utc, e.start_s, e.end_s, e.peak, e.model_sha, lr.reviewer, lr.reviewed_utc, "
           f"{'c.start_s' if clips else 'NULL'} AS clip_start_s "
           f"FROM events e JOIN ({_LATEST_REVIEW}) lr ON lr.event_id = e.id "
           f"{'LEFT JOIN clips c ON c.event_id = e.id ' if clips else ''}ORDER BY e.id")
    return [dict(r) for r in conn.execute(sql)]


# ---------------------------------------------------------------- summaries for the pages


def review_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Reviewed events by their latest verdict (confirm, reject, relabel), and the events not reviewed."""
    counts = {"confirm": 0, "reject": 0, "relabel": 0}
    if has_table(conn, "reviews"):
        for verdict, n in conn.execute(f"SELECT verdict, COUNT(*) FROM ({_LATEST_REVIEW}) GROUP BY verdict"):
            counts[verdict] = int(n)
    counts["unreviewed"] = count_rows(conn, "events") - sum(counts.values())
    return counts


def labels_seen(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT label FROM events ORDER BY label")]


def days_seen(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT substr(start_utc, 1, 10) AS d FROM events ORDER BY d DESC")]


def counts_per_day(conn: sqlite3.Connection, since_utc: float | None = None) -> list[tuple[str, str, int]]:
    """(day YYYY-MM-DD, label, number of events), by day then label."""
    sql, args = "SELECT substr(start_utc, 1, 10) AS d, label, COUNT(*) FROM events", []
    if since_utc is not None:
        sql += " WHERE start_utc >= ?"
        args.append(utc_iso(since_utc))
    return [(r[0], r[1], int(r[2])) for r in conn.execute(sql + " GROUP BY d, label ORDER BY d, label", args)]


def health_history(conn: sqlite3.Connection, limit: int = 500) -> list[dict]:
    """The newest ``limit`` heartbeats (their JSON plus ``id`` and ``t_utc``), oldest first."""
    rows = conn.execute("SELECT id, t_utc, json FROM health ORDER BY id DESC LIMIT ?", (int(limit),)).fetchall()
    out = []
    for row in reversed(rows):
        try:
            data = json.loads(row["json"])
        except json.JSONDecodeError:
            continue
        out.append({**data, "id": row["id"], "t_utc": row["t_utc"]})
    return out


def event_scores(conn: sqlite3.Connection, event: dict, pad_s: float = 3.0) -> list[tuple[float, float]]:
    """(block start offset s, the event label's score) of the logged windows from ``pad_s`` before the event to
    ``pad_s`` after it, same source; [] when windows were not logged (``log_windows = false``) or pruned."""
    lo = utc_iso(parse_utc(event["start_utc"]) - pad_s)
    hi = utc_iso(parse_utc(event["end_utc"]) + pad_s)
    rows = conn.execute("SELECT start_s, scores_json FROM windows WHERE t_utc >= ? AND t_utc <= ? AND source IS ? "
                        "ORDER BY t_utc", (lo, hi, event.get("source")))
    out = []
    for start_s, scores_json in rows:
        try:
            score = json.loads(scores_json).get(event["label"])
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(score, (int, float)):
            out.append((float(start_s), float(score)))
    return out
