"""The central store: one interface, two back ends (SQLite file, the embedded default; PostgreSQL).

``open_store(db)`` picks the back end from ``db``: a ``postgresql://`` (or ``postgres://``) URL opens
PostgreSQL through psycopg 3 (the optional extra ``fieldear[postgres]``, imported only then), anything else is
the path of a SQLite file. Both hold the same schema (events, health, reviews, devices, status, status_log;
keys ``(device_id, generation, id)``) and the collector writes both with the same statements
(``INSERT ... ON CONFLICT DO NOTHING``: a redelivered row is stored once, ``rowcount`` tells which happened),
so duplicates and conflicts are counted the same way on either.

Schema versions: SQLite keeps its version in ``PRAGMA user_version`` (files from before generation ids are
rebuilt in place); PostgreSQL in a ``schema_version`` table, each migration applied in one transaction under an
advisory lock (two collectors starting together do not both migrate).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from runtime.errors import FieldearError

log = logging.getLogger(__name__)

# 1: + generation in the keys of events/health/reviews, + devices
CENTRAL_VERSION = 1

EVENT_COLUMNS = (
    "label", "start_utc", "end_utc", "start_s", "end_s", "peak", "mean", "model_sha", "source", "clip_path",
)

PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(db) -> bool:
    return isinstance(db, str) and db.startswith(PG_SCHEMES)


def open_store(db, timeout_s: float = 10.0, readonly: bool = False) -> "CentralStore":
    """The central database ``db`` (a SQLite path or a postgresql:// URL), created/migrated unless ``readonly``."""
    if is_postgres_url(db):
        return PostgresStore.open(db, timeout_s, readonly)
    return SqliteStore.open(db, timeout_s, readonly)


def describe_db(db) -> str:
    """``db`` for messages: a URL without its password."""
    return redact_url(db) if is_postgres_url(db) else str(db)


def redact_url(url: str) -> str:
    """``url`` without its password (``user:PASSWORD@`` or ``?password=``)."""
    import re

    url = re.sub(r"([?&]password=)[^&]*", r"\1***", url)
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


class CentralStore:
    """One connection to the central database. ``errors``: the back end's exception types (a failed write:
    the caller rolls back and does not acknowledge the message). Statements use ``?`` placeholders."""

    errors: tuple[type[BaseException], ...] = ()
    #: null-safe equality
    IS = "IS"

    def __init__(self, conn, name: str):
        self.conn = conn
        self.name = name

    # ---- plumbing ----

    def _sql(self, sql: str) -> str:
        return sql

    def execute(self, sql: str, params=()):
        return self.conn.execute(self._sql(sql), params)

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        """Roll back after a failed write; never raises (the connection may be gone)."""
        try:
            self.conn.rollback()
        except Exception as exc:  # noqa: BLE001 - the error that matters is the write's
            log.debug("rollback failed: %s", exc)

    def close(self) -> None:
        self.conn.close()

    def healthy(self) -> bool:
        """False when the connection is lost (then the collector calls ``reconnect()``)."""
        return True

    def reconnect(self) -> None:
        pass

    # ---- writes (one message each; the caller commits) ----

    def set_status(self, device: str, state: str, retained: bool, now: float) -> None:
        self.execute(
            "INSERT INTO status (device_id, state, received_ts) VALUES (?, ?, ?) "
            "ON CONFLICT(device_id) DO UPDATE SET state = excluded.state, received_ts = excluded.received_ts",
            (device, state, now),
        )
        self.execute("INSERT INTO status_log (device_id, state, retained, received_ts) VALUES (?, ?, ?, ?)",
                     (device, state, int(retained), now))

    def seen(self, device: str, generation: str | None, now: float, backlog: int | None, lag: float | None) -> None:
        self.execute(
            "INSERT INTO devices (device_id, generation, last_seen_ts, backlog, backlog_ts, lag_s) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(device_id) DO UPDATE SET last_seen_ts = excluded.last_seen_ts, "
            "generation = COALESCE(excluded.generation, devices.generation), "
            "backlog = COALESCE(excluded.backlog, devices.backlog), "
            "backlog_ts = COALESCE(excluded.backlog_ts, devices.backlog_ts), "
            "lag_s = COALESCE(excluded.lag_s, devices.lag_s)",
            (device, generation, now, backlog, now if backlog is not None else None, lag),
        )

    def insert_event(self, device: str, generation: str, event_id: int, values: dict, settings_json: str | None,
                     sent_ts, now: float) -> bool:
        """True: stored; False: a row with this key exists already."""
        cols = ", ".join(EVENT_COLUMNS)
        cur = self.execute(
            f"INSERT INTO events (device_id, generation, event_id, {cols}, settings_json, sent_ts, received_ts) "
            f"VALUES (?, ?, ?, {', '.join('?' * len(EVENT_COLUMNS))}, ?, ?, ?) ON CONFLICT DO NOTHING",
            [device, generation, event_id, *(self._value(c, values.get(c)) for c in EVENT_COLUMNS), settings_json,
             sent_ts, now],
        )
        return cur.rowcount == 1

    def event_matches(self, device: str, generation: str, event_id: int, label, start_utc) -> bool | None:
        """Whether the stored event with this key has this label and start (None: no such event)."""
        row = self.execute(
            f"SELECT label {self.IS} ? AND start_utc {self.IS} ? FROM events "
            "WHERE device_id = ? AND generation = ? AND event_id = ?",
            (label, self._value("start_utc", start_utc), device, generation, event_id),
        ).fetchone()
        return None if row is None else bool(row[0])

    def legacy_copy(self, device: str, event_id: int, label, start_utc) -> bool:
        """Whether this event was stored before its log had a generation id (same device, id, label and start,
        generation ``''``)."""
        return self.execute(
            f"SELECT 1 FROM events WHERE device_id = ? AND generation = '' AND event_id = ? AND label {self.IS} ? "
            f"AND start_utc {self.IS} ?", (device, event_id, label, self._value("start_utc", start_utc)),
        ).fetchone() is not None

    def insert_health(self, device: str, generation: str, health_id: int, t_utc, health_json: str | None,
                      now: float) -> bool:
        cur = self.execute(
            "INSERT INTO health (device_id, generation, health_id, t_utc, json, received_ts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (device, generation, health_id, self._value("t_utc", t_utc), health_json, now),
        )
        return cur.rowcount == 1

    def insert_review(self, device: str, generation: str, review_id: int, event_id: int, verdict, label, t_utc,
                      reviewer, now: float) -> bool:
        cur = self.execute(
            "INSERT INTO reviews (device_id, generation, review_id, event_id, verdict, label, t_utc, reviewer, "
            "received_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (device, generation, review_id, event_id, verdict, label, self._value("t_utc", t_utc), reviewer, now),
        )
        return cur.rowcount == 1

    def _value(self, column: str, value):
        return value

    # ---- reads ----

    def device_metrics(self) -> list[tuple]:
        """(device, last_seen_ts, lag_s, backlog, events) per device, for the metrics endpoint."""
        return self.execute(
            "SELECT d.device_id, d.last_seen_ts, d.lag_s, d.backlog, e.n FROM devices d "
            "LEFT JOIN (SELECT device_id, COUNT(*) n FROM events GROUP BY device_id) e "
            "ON e.device_id = d.device_id ORDER BY d.device_id").fetchall()

    def report(self, by: str) -> list[tuple]:
        from runtime.fleet.central.report import report_sql

        return [tuple(_plain(v) for v in row) for row in self.execute(report_sql(by, self.dialect)).fetchall()]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _plain(v):
    """Decimal (PostgreSQL's ROUND) as float, so both back ends print the same."""
    from decimal import Decimal

    return float(v) if isinstance(v, Decimal) else v


# ---- SQLite ----

SQLITE_TABLES = """
CREATE TABLE IF NOT EXISTS events (
    device_id TEXT NOT NULL, generation TEXT NOT NULL DEFAULT '', event_id INTEGER NOT NULL, label TEXT,
    start_utc, end_utc, start_s REAL, end_s REAL,
    peak REAL, mean REAL, model_sha TEXT, source TEXT, settings_json TEXT, clip_path TEXT,
    sent_ts REAL, received_ts REAL NOT NULL, UNIQUE(device_id, generation, event_id));
CREATE TABLE IF NOT EXISTS health (
    device_id TEXT NOT NULL, generation TEXT NOT NULL DEFAULT '', health_id INTEGER NOT NULL, t_utc, json TEXT,
    received_ts REAL NOT NULL, UNIQUE(device_id, generation, health_id));
CREATE TABLE IF NOT EXISTS reviews (
    device_id TEXT NOT NULL, generation TEXT NOT NULL DEFAULT '', review_id INTEGER NOT NULL,
    event_id INTEGER NOT NULL, verdict TEXT NOT NULL,
    label TEXT, t_utc TEXT, reviewer TEXT, received_ts REAL NOT NULL, UNIQUE(device_id, generation, review_id));
"""

SQLITE_SCHEMA = SQLITE_TABLES + """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, generation TEXT, last_seen_ts REAL NOT NULL, backlog INTEGER, backlog_ts REAL,
    lag_s REAL);
CREATE TABLE IF NOT EXISTS status (device_id TEXT PRIMARY KEY, state TEXT NOT NULL, received_ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS status_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, state TEXT NOT NULL, retained INTEGER NOT NULL,
    received_ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_received ON events(received_ts);
"""


def open_sqlite(db_path: str | Path, timeout_s: float = 10.0) -> sqlite3.Connection:
    """The central SQLite file as a plain connection, created and migrated."""
    path = Path(db_path)
    if path.parent and not path.parent.exists():
        raise FieldearError(f"directory {path.parent} does not exist", hint="create it or give another --db")
    conn = sqlite3.connect(str(path), timeout=timeout_s)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    _migrate_sqlite(conn)
    conn.executescript(SQLITE_SCHEMA)
    conn.execute(f"PRAGMA user_version = {CENTRAL_VERSION}")
    conn.commit()
    return conn


def _migrate_sqlite(conn: sqlite3.Connection) -> None:
    """A central file from before generation ids: rebuild events/health/reviews with the new key (rows kept,
    generation ``''``), in one transaction."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= CENTRAL_VERSION:
        return
    old = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    todo = [t for t in ("events", "health", "reviews")
            if t in old and "generation" not in {c[1] for c in conn.execute(f"PRAGMA table_info({t})")}]
    if not todo:
        return
    script = ["BEGIN;"] + [f"ALTER TABLE {t} RENAME TO {t}_v0;" for t in todo] + [SQLITE_TABLES]
    for t in todo:
        cols = ", ".join(c[1] for c in conn.execute(f"PRAGMA table_info({t})"))
        script += [f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {t}_v0;", f"DROP TABLE {t}_v0;"]
    script.append("COMMIT;")
    try:
        conn.executescript("\n".join(script))
    except sqlite3.Error:
        conn.rollback()
        raise
    log.info("central database upgraded: generation ids in the keys of %s", ", ".join(todo))


class SqliteStore(CentralStore):
    errors = (sqlite3.Error,)
    dialect = "sqlite"

    @classmethod
    def open(cls, db_path, timeout_s: float = 10.0, readonly: bool = False) -> "SqliteStore":
        path = Path(db_path)
        if not readonly:
            return cls(open_sqlite(path, timeout_s), str(path))
        if not path.exists():
            raise FieldearError(f"no central database at {path}", hint="run `fieldear collect --db PATH` first")
        return cls(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_s), str(path), readonly=True)

    def __init__(self, conn: sqlite3.Connection, name: str = "", readonly: bool = False):
        super().__init__(conn, name)
        self.readonly = readonly

    def report(self, by: str) -> list[tuple]:
        has_devices = self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'devices'").fetchone() is not None
        from runtime.fleet.central.report import report_sql

        # (a central file not yet opened by this version's `collect` has no devices table)
        sql = report_sql(by, self.dialect, has_devices=has_devices)
        try:
            return self.conn.execute(sql).fetchall()
        except sqlite3.DatabaseError as exc:
            raise FieldearError(f"{self.name} is not a fieldear central database ({exc})") from None


def as_store(conn) -> CentralStore:
    """``conn`` as a store: a store stays itself, a plain sqlite3 connection (older callers, tests) is wrapped."""
    if isinstance(conn, CentralStore):
        return conn
    if isinstance(conn, sqlite3.Connection):
        return SqliteStore(conn)
    raise TypeError(f"not a central store: {conn!r}")


# ---- PostgreSQL ----

#: (version, statements): applied in order, each in one transaction, recorded in schema_version
PG_MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE events (
    device_id TEXT COLLATE "C" NOT NULL, generation TEXT COLLATE "C" NOT NULL DEFAULT '', event_id BIGINT NOT NULL,
    label TEXT COLLATE "C", start_utc TEXT COLLATE "C", end_utc TEXT COLLATE "C",
    start_s DOUBLE PRECISION, end_s DOUBLE PRECISION, peak DOUBLE PRECISION, mean DOUBLE PRECISION,
    model_sha TEXT, source TEXT, settings_json TEXT, clip_path TEXT,
    sent_ts DOUBLE PRECISION, received_ts DOUBLE PRECISION NOT NULL,
    UNIQUE (device_id, generation, event_id));
CREATE TABLE health (
    device_id TEXT COLLATE "C" NOT NULL, generation TEXT COLLATE "C" NOT NULL DEFAULT '', health_id BIGINT NOT NULL,
    t_utc TEXT COLLATE "C", json TEXT, received_ts DOUBLE PRECISION NOT NULL,
    UNIQUE (device_id, generation, health_id));
CREATE TABLE reviews (
    device_id TEXT COLLATE "C" NOT NULL, generation TEXT COLLATE "C" NOT NULL DEFAULT '', review_id BIGINT NOT NULL,
    event_id BIGINT NOT NULL, verdict TEXT NOT NULL, label TEXT COLLATE "C", t_utc TEXT COLLATE "C", reviewer TEXT,
    received_ts DOUBLE PRECISION NOT NULL, UNIQUE (device_id, generation, review_id));
CREATE TABLE devices (
    device_id TEXT COLLATE "C" PRIMARY KEY, generation TEXT, last_seen_ts DOUBLE PRECISION NOT NULL,
    backlog BIGINT, backlog_ts DOUBLE PRECISION, lag_s DOUBLE PRECISION);
CREATE TABLE status (
    device_id TEXT COLLATE "C" PRIMARY KEY, state TEXT NOT NULL, received_ts DOUBLE PRECISION NOT NULL);
CREATE TABLE status_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, device_id TEXT COLLATE "C" NOT NULL, state TEXT NOT NULL,
    retained INTEGER NOT NULL, received_ts DOUBLE PRECISION NOT NULL);
CREATE INDEX events_received ON events (received_ts);
"""),
]
assert PG_MIGRATIONS[-1][0] == CENTRAL_VERSION

_PG_LOCK = 0x66656172  # advisory lock key of the migrations ("fear")


def import_psycopg():
    try:
        import psycopg
    except ImportError:
        raise FieldearError("a postgresql:// database needs psycopg, which is not installed",
                            hint="pip install 'fieldear[postgres]'") from None
    return psycopg


class PostgresStore(CentralStore):
    IS = "IS NOT DISTINCT FROM"
    dialect = "postgres"

    @classmethod
    def connect(cls, url: str, timeout_s: float = 10.0):
        """A raw connection (raises the driver's errors)."""
        psycopg = import_psycopg()
        return psycopg.connect(url, connect_timeout=max(1, int(round(timeout_s))),
                               application_name="fieldear")

    @classmethod
    def open(cls, url: str, timeout_s: float = 10.0, readonly: bool = False) -> "PostgresStore":
        psycopg = import_psycopg()
        name = redact_url(url)
        try:
            conn = cls.connect(url, timeout_s)
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FieldearError(f"cannot connect to the central database {name}: {first}",
                                hint="check the URL, the server and its pg_hba.conf") from None
        store = cls(conn, name, url, timeout_s)
        try:
            if readonly:
                store.check_schema()
            else:
                store.migrate()
        except BaseException:
            conn.close()
            raise
        return store

    def __init__(self, conn, name: str, url: str = "", timeout_s: float = 10.0):
        super().__init__(conn, name)
        self.url = url
        self.timeout_s = timeout_s
        import psycopg

        self.errors = (psycopg.Error,)

    def execute(self, sql: str, params=()):
        if not params:
            return self.conn.execute(sql)
        return self.conn.execute(sql.replace("%", "%%").replace("?", "%s"), params)

    def _value(self, column: str, value):
        # text columns of untyped SQLite ones (start_utc, t_utc): a number a device sent is kept as its text
        if column in ("start_utc", "end_utc", "t_utc") and value is not None and not isinstance(value, str):
            return str(value)
        return value

    def healthy(self) -> bool:
        return not (self.conn.closed or self.conn.broken)

    def reconnect(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass
        self.conn = self.connect(self.url, self.timeout_s)

    def version(self) -> int:
        has = self.conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
        if not has:
            return 0
        row = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return row[0] or 0

    def check_schema(self) -> None:
        version = self.version()
        self.conn.rollback()
        if version == 0:
            raise FieldearError(f"{self.name} is not a fieldear central database (no schema_version table)",
                                hint="run `fieldear collect --db URL` first")
        if version > CENTRAL_VERSION:
            raise FieldearError(f"{self.name} has central schema version {version}, newer than this fieldear's "
                                f"{CENTRAL_VERSION}", hint="upgrade fieldear")

    def migrate(self) -> None:
        """Apply every migration above the database's version, each in one transaction (advisory lock held)."""
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
            self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                              "version INTEGER PRIMARY KEY, applied_utc TIMESTAMPTZ NOT NULL DEFAULT now())")
            current = self.version()
            if current > CENTRAL_VERSION:
                raise FieldearError(f"{self.name} has central schema version {current}, newer than this "
                                    f"fieldear's {CENTRAL_VERSION}", hint="upgrade fieldear")
            for version, sql in PG_MIGRATIONS:
                if version <= current:
                    continue
                with self.conn.transaction():
                    self.conn.execute(sql)
                    self.conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                log.info("central database %s: schema version %d", self.name, version)

    def report(self, by: str) -> list[tuple]:
        try:
            return super().report(by)
        finally:
            self.conn.rollback()

    def device_metrics(self) -> list[tuple]:
        try:
            return super().device_metrics()
        finally:
            self.conn.rollback()
