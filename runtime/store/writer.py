"""The durable log: one SQLite file in WAL mode (``synchronous=NORMAL``: a killed process loses nothing
committed and never corrupts the file).

Tables (rows are only inserted, never updated, except ``events.clip_path`` which may be set once):

- ``events(id, label, start_utc, end_utc, start_s, end_s, peak, mean, model_sha, device_id, source,
  settings_json, clip_path)``: every event; **the outbox** of the fleet area (it keeps its own cursor table
  ``outbox_state`` in the same file and sends rows with id > cursor, in order).
- ``windows(id, t_utc, start_s, end_s, scores_json, top_label, top_score, model_sha, device_id, source,
  settings_sha)``: every block's scores (or every Nth); ``settings_sha`` keys ``meta['settings:<sha>']``.
- ``health(id, t_utc, device_id, json)``: heartbeats (written by the field area through ``add_health``).
- ``clips(event_id, start_s)``: where each saved clip starts (offset in the stream, like ``start_s``).
- ``meta(key, value)``: schema version, the log's ``generation`` id (uuid4, made once), settings by sha, one
  ``run:<n>`` record per listen run.

Times: ``*_utc`` are ISO 8601 UTC text with milliseconds (``2026-05-01T04:12:07.250Z``: sorts as text);
``start_s``/``end_s`` are offsets in the stream of that run.

Writing never stops classification: on an SQLite error (disk full, I/O error, locked) rows stay in a
bounded memory buffer, the error is logged once, rows that overflow the buffer are counted in
``dropped_rows``, and the next flush retries.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Callable

from runtime.paths import logging_state_path
from runtime.store.schema import (
    EVENT_COLUMNS,
    DiskFullError,
    connect,
    settings_sha,
    utc_iso,
)

log = logging.getLogger(__name__)

# A log database that cannot be opened (disk full at start) is retried, with a warning, this often.
REOPEN_EVERY_S = 60.0


class Store:
    """Append-only writer for one listen run.

    ``context`` columns (model_sha, device_id, source, settings) are fixed per run. Windows are buffered and
    written by ``flush()`` (the listener calls it about once a second and at the end); events are written
    and committed at once (they are the outbox). ``window_every`` = N keeps every Nth block's scores; 0 none.
    """

    def __init__(self, path, *, device_id: str = "", source: str = "", model_sha: str = "",
                 settings: dict | None = None, window_every: int = 1, keep_days: float | None = None,
                 max_db_mb: float | None = None, clock: Callable[[], float] = time.time,
                 max_pending: int = 20000, retry_s: float = 30.0):
        self.path = Path(path)
        self.device_id = device_id
        self.source = source
        self.model_sha = model_sha
        self.settings_json = json.dumps(settings or {}, sort_keys=True, separators=(",", ":"))
        self.settings_sha = settings_sha(self.settings_json)
        self.window_every = int(window_every)
        self.keep_days = keep_days
        self.max_db_mb = max_db_mb
        self.clock = clock
        self.max_pending = int(max_pending)
        self.retry_s = retry_s
        self.conn = None
        self._reopen_at = 0.0
        self._run_info: dict | None = None  # start_run's info while the database cannot be opened
        self._pending_windows: list[tuple] = []
        self._pending_events: list[tuple[dict, Callable | None]] = []
        self._pending_other: list[tuple[str, tuple]] = []
        self._blocks_seen = 0
        self.rows_written = {"events": 0, "windows": 0, "health": 0}
        self.dropped_rows = 0
        self.write_errors = 0
        self.failing = False
        self._retry_at = 0.0
        self.run_key = None
        self._last_prune = None
        self._suspended_since: str | None = None
        self._state_path = logging_state_path(self.path)
        self._write_state()  # pre-create it now, while there is space (a full disk can still rewrite it)
        self._open()

    def _open(self) -> bool:
        """Open the database (at start, then every REOPEN_EVERY_S while its disk is full); True when open."""
        if self.conn is not None:
            return True
        now = self.clock()
        if now < self._reopen_at:
            return False
        try:
            self.conn = connect(self.path)
        except DiskFullError as exc:
            self._reopen_at = now + REOPEN_EVERY_S
            self.failing = True
            self._suspend(exc.message)
            log.warning("%s; listening goes on, nothing is logged until there is space (retrying every %.0f s)",
                        exc.message, REOPEN_EVERY_S)
            return False
        if self._run_info is not None:
            log.warning("log database %s open again: logging resumes", self.path)
            self.start_run(self._run_info)
        return True

    # ------------------------------------------------------------ state file

    # The state file is pre-created at start (padded to STATE_BYTES) and rewritten in place, never grown: on a
    # full disk a rewrite of already allocated blocks still succeeds where SQLite (which needs new pages) fails.
    STATE_BYTES = 512

    def _suspend(self, error: str) -> None:
        if self._suspended_since is None:
            self._suspended_since = utc_iso(self.clock())
        self._write_state(error)

    def _write_state(self, error: str = "") -> None:
        """Rewrite the state file: ``{}`` while logging works, else since/rows lost/last error."""
        state = {} if self._suspended_since is None else {
            "suspended_since": self._suspended_since, "rows_lost": self.dropped_rows, "error": error[:200]}
        data = json.dumps(state).encode()
        while len(data) > self.STATE_BYTES:  # shorten the error, never cut the JSON (status must parse it)
            state["error"] = state["error"][: len(state["error"]) // 2]
            data = json.dumps(state).encode()
        data = data.ljust(self.STATE_BYTES)
        try:
            with open(self._state_path, "r+b" if self._state_path.exists() else "wb") as f:
                f.write(data)
        except OSError as exc:
            log.debug("cannot write %s: %s", self._state_path, exc)

    # ------------------------------------------------------------ run records

    def start_run(self, info: dict) -> str | None:
        """Record this run (settings, model, source) in meta; returns its key ``run:<n>`` (None, and recorded
        later, while the database cannot be opened)."""
        if self.conn is None:
            self._run_info = info
            return None
        self._run_info = None
        cur = self.conn.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'run:%'")
        n = cur.fetchone()[0] + 1
        first_event = self.conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM events").fetchone()[0]
        first_window = self.conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM windows").fetchone()[0]
        self.run_key = f"run:{n:06d}"
        self._run = {"started_utc": utc_iso(self.clock()), "source": self.source, "device_id": self.device_id,
                     "model_sha": self.model_sha, "settings_sha": self.settings_sha,
                     "first_event_id": first_event, "first_window_id": first_window, **info}
        self._put_meta(self.run_key, json.dumps(self._run, sort_keys=True))
        self._put_meta(f"settings:{self.settings_sha}", self.settings_json)
        self.flush(force=True)
        return self.run_key

    def end_run(self, summary: dict) -> None:
        """Write what is pending, then the run's end record (with ``dropped_rows``).

        Rows that still cannot be written are dropped and counted first, so the count is final before the
        caller's summary; the end record alone (a small transaction) is then tried once more.
        """
        if not self.flush(force=True):
            self._drop_pending()
        if self.run_key is None:
            return
        self._run.update(summary, dropped_rows=self.dropped_rows, ended_utc=utc_iso(self.clock()))
        self._put_meta(self.run_key, json.dumps(self._run, sort_keys=True))
        if not self.flush(force=True):
            self._pending_other.clear()
            log.error("cannot write the end record of %s to %s", self.run_key, self.path)

    def _drop_pending(self) -> None:
        lost = self.pending
        self.dropped_rows += lost
        self._pending_windows.clear()
        self._pending_events.clear()
        self._pending_other.clear()
        log.error("the log database cannot be written: %d row(s) dropped at the end of the run "
                  "(%d in all)", lost, self.dropped_rows)

    def _put_meta(self, key: str, value: str) -> None:
        self._pending_other.append(("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value)))

    # ------------------------------------------------------------ rows

    def add_window(self, t_utc: float, start_s: float, end_s: float, labels, scores) -> None:
        self._blocks_seen += 1
        if self.window_every <= 0 or (self._blocks_seen - 1) % self.window_every:
            return
        values = [round(float(x), 4) for x in scores]
        top = max(range(len(values)), key=values.__getitem__)
        row = (utc_iso(t_utc), round(start_s, 3), round(end_s, 3),
               json.dumps(dict(zip(labels, values)), separators=(",", ":")), labels[top], values[top],
               self.model_sha, self.device_id, self.source, self.settings_sha)
        if len(self._pending_windows) >= self.max_pending:
            self._pending_windows.pop(0)
            self._count_drop()
        self._pending_windows.append(row)

    def add_event(self, row: dict, on_written: Callable[[dict], None] | None = None) -> None:
        """Insert an event (dict with label, start_utc, end_utc, start_s, end_s, peak, mean) and commit.

        ``on_written(row)`` is called with the row including its ``id`` once it is in the database (at
        once, or after a later retry when the disk was full)."""
        full = {"label": row["label"], "start_utc": row["start_utc"], "end_utc": row["end_utc"],
                "start_s": round(float(row["start_s"]), 3), "end_s": round(float(row["end_s"]), 3),
                "peak": round(float(row["peak"]), 4), "mean": round(float(row["mean"]), 4),
                "model_sha": self.model_sha, "device_id": self.device_id, "source": self.source,
                "settings_json": self.settings_json, "clip_path": row.get("clip_path")}
        if len(self._pending_events) >= self.max_pending:
            self._pending_events.pop(0)
            self._count_drop()
        self._pending_events.append((full, on_written))
        self.flush(force=True)

    def add_health(self, data: dict, t_utc: float | None = None) -> None:
        t = utc_iso(self.clock() if t_utc is None else t_utc)
        self._pending_other.append(("INSERT INTO health(t_utc, device_id, json) VALUES (?, ?, ?)",
                                    (t, self.device_id, json.dumps(data, sort_keys=True))))
        self.flush(force=True)

    def set_clip_path(self, event_id: int, clip_path: str, start_s: float | None = None) -> None:
        """The event's saved clip, and where it starts in the stream (``start_s``; None: not known)."""
        self._pending_other.append(("UPDATE events SET clip_path = ? WHERE id = ? AND clip_path IS NULL",
                                    (clip_path, int(event_id))))
        if start_s is not None:
            self._pending_other.append(("INSERT OR IGNORE INTO clips(event_id, start_s) VALUES (?, ?)",
                                        (int(event_id), round(float(start_s), 4))))
        self.flush(force=True)

    def _count_drop(self) -> None:
        self.dropped_rows += 1
        if self.dropped_rows == 1 or self.dropped_rows % 1000 == 0:
            log.warning("log database unavailable: %d row(s) dropped so far", self.dropped_rows)

    @property
    def pending(self) -> int:
        return len(self._pending_windows) + len(self._pending_events) + len(self._pending_other)

    # ------------------------------------------------------------ writing

    def flush(self, force: bool = False) -> bool:
        """Write pending rows in one transaction; False (rows kept) when SQLite fails."""
        if not self.pending:
            return True
        now = self.clock()
        if self.failing and not force and now < self._retry_at:
            return False
        if not self._open():
            return False
        written = []
        try:
            with self.conn:
                for sql, args in self._pending_other:
                    self.conn.execute(sql, args)
                if self._pending_windows:
                    self.conn.executemany(
                        "INSERT INTO windows(t_utc, start_s, end_s, scores_json, top_label, top_score, model_sha, "
                        "device_id, source, settings_sha) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        self._pending_windows)
                for row, cb in self._pending_events:
                    cols = [c for c in EVENT_COLUMNS if c != "id"]
                    cur = self.conn.execute(
                        f"INSERT INTO events({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [row[c] for c in cols])
                    written.append(({**row, "id": cur.lastrowid}, cb))
        except sqlite3.Error as exc:
            self.write_errors += 1
            self._retry_at = now + self.retry_s
            if not self.failing:
                log.error("cannot write the log database %s: %s; classification continues, rows are kept in "
                          "memory (up to %d) and written when it works again", self.path, exc, self.max_pending)
            self.failing = True
            self._suspend(str(exc))
            return False
        if self.failing:
            log.warning("log database writable again; %d row(s) were dropped meanwhile", self.dropped_rows)
        self.failing = False
        if self._suspended_since is not None:
            self._suspended_since = None
            self._write_state()
        self.rows_written["windows"] += len(self._pending_windows)
        self.rows_written["events"] += len(written)
        self._pending_windows.clear()
        self._pending_events.clear()
        self._pending_other.clear()
        for row, cb in written:
            if cb is not None:
                cb(row)
        return True

    # ------------------------------------------------------------ retention

    def size_mb(self) -> float:
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total / 1e6

    def _used_mb(self) -> float:
        page = self.conn.execute("PRAGMA page_size").fetchone()[0]
        count = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (count - free) * page / 1e6

    def prune(self, every_s: float = 600.0) -> dict:
        """Apply ``keep_days`` and ``max_db_mb`` (oldest first; windows before events). At most every ``every_s``."""
        now = self.clock()
        if self._last_prune is not None and now - self._last_prune < every_s:
            return {}
        self._last_prune = now
        if self.keep_days is None and self.max_db_mb is None:
            return {}
        if not self.flush(force=True):
            return {}
        deleted = {"windows": 0, "events": 0, "health": 0}
        try:
            if self.keep_days is not None:
                cutoff = utc_iso(now - float(self.keep_days) * 86400.0)
                with self.conn:
                    for table, col in (("windows", "t_utc"), ("events", "end_utc"), ("health", "t_utc")):
                        deleted[table] += self.conn.execute(
                            f"DELETE FROM {table} WHERE {col} < ? AND id <= ?", (cutoff, self._deletable_up_to(table))
                        ).rowcount
            if self.max_db_mb is not None:
                target = float(self.max_db_mb) * 0.9
                for table in ("windows", "health", "events"):
                    while self._used_mb() > target:
                        count = self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                        batch = max(50, count // 20)  # 5 % steps: does not overshoot by much
                        with self.conn:
                            n = self.conn.execute(
                                f"DELETE FROM {table} WHERE id IN "
                                f"(SELECT id FROM {table} WHERE id <= ? ORDER BY id LIMIT ?)",
                                (self._deletable_up_to(table), batch)).rowcount
                        if n == 0:
                            break
                        deleted[table] += n
            if any(deleted.values()):
                self.conn.executescript("PRAGMA incremental_vacuum;")  # (execute() frees only one page)
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                log.info("retention: deleted %s", deleted)
        except sqlite3.Error as exc:
            log.warning("retention pass failed: %s", exc)
        return deleted

    def _deletable_up_to(self, table: str) -> int:
        """Highest id of ``table`` retention may delete: rows the collector has not acknowledged yet (the
        cursor of runtime/fleet/outbox.py) are kept, so a long broker outage loses nothing; without an outbox, any row."""
        if table not in ("events", "health"):
            return 2**62
        try:
            row = self.conn.execute("SELECT last_id FROM outbox_state WHERE stream = ?", (table,)).fetchone()
        except sqlite3.OperationalError:  # no outbox_state table: this device does not report
            return 2**62
        return int(row[0]) if row else 0

    def close(self) -> None:
        if not self.flush(force=True):
            self._drop_pending()
        if self.conn is None:
            return
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass
        self.conn.close()


# ---------------------------------------------------------------- reading


