"""Schema 3: the log's generation id (made once per log file), and the in-place upgrade of a version-2 log."""

import sqlite3

import pytest

from runtime.store import schema
from runtime.store.schema import SCHEMA_VERSION, connect, log_generation
from runtime.store.writer import Store

pytestmark = pytest.mark.runtime

# a version-2 log as fieldear wrote it before generation ids (tables of schema 2, no meta['generation'])
V2 = """
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, label TEXT NOT NULL, start_utc TEXT NOT NULL,
    end_utc TEXT NOT NULL, start_s REAL NOT NULL, end_s REAL NOT NULL, peak REAL NOT NULL, mean REAL NOT NULL,
    model_sha TEXT, device_id TEXT, source TEXT, settings_json TEXT, clip_path TEXT);
CREATE TABLE windows (id INTEGER PRIMARY KEY AUTOINCREMENT, t_utc TEXT NOT NULL, start_s REAL NOT NULL,
    end_s REAL NOT NULL, scores_json TEXT NOT NULL, top_label TEXT, top_score REAL, model_sha TEXT, device_id TEXT,
    source TEXT, settings_sha TEXT);
CREATE TABLE health (id INTEGER PRIMARY KEY AUTOINCREMENT, t_utc TEXT NOT NULL, device_id TEXT, json TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE reviews (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id INTEGER NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('confirm', 'reject', 'relabel')),
    label TEXT NOT NULL, t_utc TEXT NOT NULL, reviewer TEXT NOT NULL, device_id TEXT);
INSERT INTO meta VALUES ('schema_version', '2');
INSERT INTO events (label, start_utc, end_utc, start_s, end_s, peak, mean, device_id)
    VALUES ('dog', '2026-05-01T00:00:00.000Z', '2026-05-01T00:00:01.000Z', 0, 1, 0.9, 0.8, 'd1');
CREATE TABLE outbox_state (stream TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
INSERT INTO outbox_state VALUES ('events', 1);
"""


def _ids():
    n = iter(range(1, 100))
    return lambda: f"gen-{next(n):02d}"


def test_a_new_log_gets_one_generation_id_and_keeps_it(tmp_path):
    factory = _ids()
    conn = connect(tmp_path / "a.db", generation_factory=factory)
    assert log_generation(conn) == "gen-01"
    conn.close()
    conn = connect(tmp_path / "a.db", generation_factory=factory)  # opened again: the same id, none made
    assert log_generation(conn, factory) == "gen-01"
    conn.close()
    ro = connect(tmp_path / "a.db", readonly=True)
    assert log_generation(ro, create=False) == "gen-01"
    ro.close()
    # the log recreated (deleted, then a new one at the same path): a new generation
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"a.db{suffix}").unlink(missing_ok=True)
    conn = connect(tmp_path / "a.db", generation_factory=factory)
    assert log_generation(conn) == "gen-02"


def test_default_generation_ids_are_uuid4_hex(tmp_path, monkeypatch):
    a = log_generation(connect(tmp_path / "a.db"))
    b = log_generation(connect(tmp_path / "b.db"))
    assert a != b and len(a) == 32 and int(a, 16) >= 0
    monkeypatch.setattr(schema, "new_generation_id", lambda: "injected")
    assert log_generation(connect(tmp_path / "c.db")) == "injected"


def test_a_version_2_log_is_upgraded_in_place(tmp_path):
    path = tmp_path / "v2.db"
    old = sqlite3.connect(path)
    old.executescript(V2)
    old.commit()
    old.close()
    ro = connect(path, readonly=True)  # a reader of the old log: no generation, no error
    assert log_generation(ro, create=False) is None
    ro.close()
    store = Store(path, device_id="d1", clock=lambda: 1_780_000_000.0)
    conn = store.conn
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION) == "4"
    gen = log_generation(conn, create=False)
    assert gen is not None and len(gen) == 32
    # nothing else changed: the old row, its id, the outbox cursor; new rows continue the ids
    assert [tuple(r) for r in conn.execute("SELECT id, label FROM events")] == [(1, "dog")]
    assert conn.execute("SELECT last_id FROM outbox_state WHERE stream = 'events'").fetchone()[0] == 1
    store.add_event({"label": "rain", "start_utc": "2026-05-01T00:00:02.000Z", "end_utc": "2026-05-01T00:00:03.000Z",
                     "start_s": 2, "end_s": 3, "peak": 0.7, "mean": 0.6})
    assert [r[0] for r in conn.execute("SELECT id FROM events ORDER BY id")] == [1, 2]
    store.close()
    assert log_generation(connect(path), create=False) == gen  # stable across opens


def test_the_outbox_gives_an_old_log_its_generation_too(tmp_path):
    """A log the outbox opens before any listener upgraded it (e.g. `fieldear outbox send` on an old file)."""
    from runtime.fleet import outbox

    path = tmp_path / "v2.db"
    old = sqlite3.connect(path)
    old.executescript(V2)
    old.close()
    conn = outbox.connect(path)
    gen = outbox.generation(conn, factory=lambda: "from-outbox")
    assert gen == "from-outbox" == outbox.generation(conn)
    assert log_generation(connect(path), create=False) == "from-outbox"  # the store keeps it
