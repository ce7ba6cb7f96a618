"""The device log's schema: tables, columns, time format, and the one way to open the file (``connect``)."""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import logging
import sqlite3
import uuid
from pathlib import Path
from typing import Callable

from runtime.errors import FieldearError

log = logging.getLogger(__name__)


# 1: events, windows, health, meta. 2: + reviews (created on the next writable open of an older log).
# 3: + meta['generation'], the log's generation id (a uuid4 made once, when the log is created or upgraded): rows
#    are known centrally as (device_id, generation, id), so a recreated log never collides with the old one.
# 4: + clips(event_id, start_s): where a saved clip starts in the stream (runtime.listen.clips), so training from
#    reviews knows which of the clip's blocks are the event's (convert.openset.reviews.event_span); older clips
#    have no row and are placed by their length.
SCHEMA_VERSION = 4

GENERATION_KEY = "generation"

# where new generation ids come from (tests inject their own)
new_generation_id: Callable[[], str] = lambda: uuid.uuid4().hex  # noqa: E731


SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label TEXT NOT NULL, start_utc TEXT NOT NULL, end_utc TEXT NOT NULL,
    start_s REAL NOT NULL, end_s REAL NOT NULL, peak REAL NOT NULL, mean REAL NOT NULL,
    model_sha TEXT, device_id TEXT, source TEXT, settings_json TEXT, clip_path TEXT);
CREATE INDEX IF NOT EXISTS events_start_utc ON events(start_utc);
CREATE TABLE IF NOT EXISTS windows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t_utc TEXT NOT NULL, start_s REAL NOT NULL, end_s REAL NOT NULL, scores_json TEXT NOT NULL,
    top_label TEXT, top_score REAL, model_sha TEXT, device_id TEXT, source TEXT, settings_sha TEXT);
CREATE INDEX IF NOT EXISTS windows_t_utc ON windows(t_utc);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY AUTOINCREMENT, t_utc TEXT NOT NULL, device_id TEXT, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS health_t_utc ON health(t_utc);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id INTEGER NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('confirm', 'reject', 'relabel')),
    label TEXT NOT NULL, t_utc TEXT NOT NULL, reviewer TEXT NOT NULL, device_id TEXT);
CREATE INDEX IF NOT EXISTS reviews_event_id ON reviews(event_id);
CREATE TABLE IF NOT EXISTS clips (event_id INTEGER PRIMARY KEY, start_s REAL NOT NULL);
"""

EVENT_COLUMNS = ("id", "label", "start_utc", "end_utc", "start_s", "end_s", "peak", "mean", "model_sha",
                 "device_id", "source", "settings_json", "clip_path")

WINDOW_COLUMNS = ("id", "t_utc", "start_s", "end_s", "scores_json", "top_label", "top_score", "model_sha",
                  "device_id", "source", "settings_sha")

HEALTH_COLUMNS = ("id", "t_utc", "device_id", "json")

# One row per review of an event, insert-only (the latest review of an event is its current verdict).
# ``label`` is what the clip is after the review: the event's label (confirm), "background" (reject), or the
# new label (relabel, possibly "background").
REVIEW_COLUMNS = ("id", "event_id", "verdict", "label", "t_utc", "reviewer", "device_id")

TABLE_COLUMNS = {"events": EVENT_COLUMNS, "windows": WINDOW_COLUMNS, "health": HEALTH_COLUMNS,
                 "reviews": REVIEW_COLUMNS}


def utc_iso(ts: float) -> str:
    """Unix seconds -> ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    d = _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def parse_utc(text: str) -> float:
    """ISO 8601 (``Z`` or offset; naive means UTC) -> Unix seconds."""
    d = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return d.timestamp()


def settings_sha(settings_json: str) -> str:
    return hashlib.sha256(settings_json.encode()).hexdigest()[:16]


class DiskFullError(FieldearError):
    """The log database cannot be opened because its disk is full (listening goes on without it)."""


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


def log_generation(conn: sqlite3.Connection, factory: Callable[[], str] | None = None, create: bool = True) -> str | None:
    """The log's generation id (``meta['generation']``), made once with ``factory`` (default
    ``new_generation_id``) if the log has none yet and ``create``; None for a read-only old log."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (GENERATION_KEY,)).fetchone()
    if row is not None and row[0]:
        return str(row[0])
    if not create:
        return None
    value = str((factory or new_generation_id)())
    # INSERT OR IGNORE: two processes opening a new log at once agree on the first one's id
    conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (GENERATION_KEY, value))
    conn.commit()
    return str(conn.execute("SELECT value FROM meta WHERE key = ?", (GENERATION_KEY,)).fetchone()[0])


def migrate(conn: sqlite3.Connection, generation_factory: Callable[[], str] | None = None) -> None:
    """Bring the recorded schema version up to date (the tables themselves come from ``SCHEMA``, whose
    statements are all ``IF NOT EXISTS``: a version-1 log gains the reviews table; versions 1-2 gain the
    generation id in ``meta``; versions 1-3 the clips table; rows are never rewritten)."""
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    old = int(row[0]) if row else None
    log_generation(conn, generation_factory)
    if old != SCHEMA_VERSION:
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        if old is not None:
            log.info("device log schema %d -> %d (reviews table, generation id, clips table)", old, SCHEMA_VERSION)
    conn.commit()


def has_table(conn: sqlite3.Connection, table: str) -> bool:
    """Whether ``table`` exists (a read-only connection to an old log may lack the newer tables)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None


def connect(path, readonly: bool = False, timeout: float = 10.0,
            generation_factory: Callable[[], str] | None = None) -> sqlite3.Connection:
    """Open a log database (created with the schema, and its generation id, unless ``readonly``)."""
    path = Path(path)
    if readonly:
        if not path.is_file():
            raise FieldearError(f"no log database at {path}", "pass --db PATH or run `fieldear listen` first")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        conn.row_factory = sqlite3.Row
        return conn
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=timeout)
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new file
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        migrate(conn, generation_factory)
    except (OSError, sqlite3.Error) as exc:
        error = DiskFullError if _is_disk_full(exc) else FieldearError
        raise error(f"cannot open the log database {path}: {exc}",
                    "check the directory is writable and the disk is not full") from None
    conn.row_factory = sqlite3.Row
    return conn
