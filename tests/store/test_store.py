"""The durable log: schema, WAL, thinning, retention, disk-full handling, survival of SIGKILL."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from runtime.store.queries import parse_since, query, runs
from runtime.store.schema import connect, utc_iso
from runtime.store.writer import Store

pytestmark = pytest.mark.runtime

T0 = 1_780_000_000.0  # 2026-05-28


def make_store(path, clock=lambda: T0, **kw):
    return Store(path, device_id="dev-1", source="file:x.wav", model_sha="abc123",
                 settings={"thresholds": {"dog": 0.5}, "smoothing": 3}, clock=clock, **kw)


def event(i, t=T0):
    return {"label": "dog", "start_utc": utc_iso(t + i), "end_utc": utc_iso(t + i + 1), "start_s": i,
            "end_s": i + 1, "peak": 0.9, "mean": 0.7}


def test_schema_wal_and_rows_carry_context(tmp_path):
    st = make_store(tmp_path / "a.db")
    st.start_run({"labels": ["dog", "cat"]})
    st.add_window(T0, 0.0, 2.32, ["dog", "cat"], [0.25, 0.75])
    written = []
    st.add_event(event(0), on_written=written.append)
    st.close()
    conn = connect(tmp_path / "a.db", readonly=True)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cols = [r[1] for r in conn.execute("PRAGMA table_info(events)")]
    assert cols == ["id", "label", "start_utc", "end_utc", "start_s", "end_s", "peak", "mean", "model_sha",
                    "device_id", "source", "settings_json", "clip_path"]
    ev = dict(query(conn, "events").fetchone())
    assert ev["model_sha"] == "abc123" and ev["device_id"] == "dev-1" and ev["source"] == "file:x.wav"
    assert json.loads(ev["settings_json"])["smoothing"] == 3
    assert written[0]["id"] == ev["id"] == 1
    w = dict(query(conn, "windows").fetchone())
    assert json.loads(w["scores_json"]) == {"dog": 0.25, "cat": 0.75}
    assert (w["top_label"], w["t_utc"]) == ("cat", "2026-05-28T20:26:40.000Z")
    settings = conn.execute("SELECT value FROM meta WHERE key = ?", (f"settings:{w['settings_sha']}",)).fetchone()
    assert json.loads(settings[0])["thresholds"] == {"dog": 0.5}
    assert runs(conn)[0]["labels"] == ["dog", "cat"] and runs(conn)[0]["first_event_id"] == 1


def test_window_every_thins_block_scores(tmp_path):
    st = make_store(tmp_path / "a.db", window_every=3)
    for i in range(10):
        st.add_window(T0 + i, i, i + 2, ["a"], [0.1])
    st.close()
    conn = connect(tmp_path / "a.db", readonly=True)
    assert [r["start_s"] for r in query(conn, "windows")] == [0, 3, 6, 9]


def test_keep_days_deletes_old_rows(tmp_path):
    now = [T0]
    st = make_store(tmp_path / "a.db", clock=lambda: now[0], keep_days=1)
    for day in range(5):
        st.add_window(T0 + day * 86400, 0, 1, ["a"], [0.5])
        st.add_event(event(0, T0 + day * 86400))
    st.flush()
    now[0] = T0 + 4 * 86400 + 10
    deleted = st.prune(every_s=0)
    # cutoff = now - 1 day = day 3 + 10 s: days 0..3 go, day 4 stays
    assert deleted["windows"] == 4 and deleted["events"] == 4
    assert st.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    assert st.conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0] == 1


def test_max_db_mb_deletes_oldest_windows_before_events(tmp_path):
    st = make_store(tmp_path / "a.db", max_db_mb=0.5)
    labels = [f"label_{i}" for i in range(20)]
    for i in range(4000):
        st.add_window(T0 + i, i, i + 1, labels, [0.123456] * 20)
    for i in range(50):
        st.add_event(event(i))
    st.flush()
    assert st._used_mb() > 0.5
    deleted = st.prune(every_s=0)
    assert deleted["windows"] > 0 and deleted["events"] == 0
    assert st._used_mb() <= 0.5
    ids = [r[0] for r in st.conn.execute("SELECT id FROM windows ORDER BY id")]
    assert ids and ids[-1] == 4000 and ids[0] > 1  # the newest kept
    assert st.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 50
    st.close()
    assert os.path.getsize(tmp_path / "a.db") < 0.6e6  # incremental vacuum gave the space back


def test_disk_full_keeps_going_counts_drops_and_resumes(tmp_path, caplog):
    st = make_store(tmp_path / "a.db", max_pending=100, retry_s=0)
    st.flush()
    pages = st.conn.execute("PRAGMA page_count").fetchone()[0]
    st.conn.execute(f"PRAGMA max_page_count = {pages}")  # the database cannot grow: SQLITE_FULL
    for i in range(300):
        st.add_window(T0 + i, i, i + 1, ["a"], [0.5] * 1)
        st.flush()
    st.add_event(event(1))
    before = st.rows_written["windows"]  # what fitted in the last free pages
    assert before < 200
    assert st.failing and st.write_errors > 100 and len(st._pending_windows) == 100
    assert st.dropped_rows == 300 - before - 100  # the buffer is bounded, overflow is counted

    assert sum("cannot write the log database" in r.message for r in caplog.records) == 1  # logged once
    st.conn.execute("PRAGMA max_page_count = 1073741823")  # space is back
    assert st.flush()
    assert not st.failing
    assert st.conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0] == before + 100
    assert st.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    st.close()


WRITER = """
import sys, time
from runtime.store.writer import Store
from runtime.store.schema import utc_iso
st = Store(sys.argv[1], device_id="d", source="s", model_sha="m", settings={})
st.start_run({})
i = 0
while True:
    st.add_window(time.time(), i, i + 1, ["a", "b"], [0.1, 0.9])
    if i % 10 == 0:
        st.add_event({"label": "a", "start_utc": utc_iso(time.time()), "end_utc": utc_iso(time.time()),
                      "start_s": i, "end_s": i + 1, "peak": 1, "mean": 1})
    if i % 25 == 0:
        st.flush()
    if i == 200:
        print("ready", flush=True)
    i += 1
"""


def test_survives_sigkill_mid_stream(tmp_path):
    db = tmp_path / "k.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert os.path.exists(str(db) + "-wal")  # killed with a live WAL
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_windows = conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
    n_events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert n_windows > 200 and n_events > 20
    conn.close()
    st = make_store(db)  # a restarted writer appends after the last committed row
    st.add_event(event(0))
    st.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT MAX(id) FROM events").fetchone()[0] == n_events + 1


def test_parse_since():
    assert parse_since("1h", T0) == T0 - 3600
    assert parse_since("30m", T0) == T0 - 1800
    assert parse_since("2d", T0) == T0 - 2 * 86400
    assert parse_since("2026-05-28T00:00:00Z", T0) == 1779926400.0
    with pytest.raises(Exception, match="cannot read --since"):
        parse_since("yesterday", T0)


def test_retention_keeps_events_the_outbox_has_not_sent(tmp_path):
    from runtime.fleet.outbox import STATE_DDL, mark_sent

    now = [T0]
    st = make_store(tmp_path / "a.db", clock=lambda: now[0], keep_days=1)
    for day in range(5):
        st.add_event(event(0, T0 + day * 86400))
    st.flush()
    st.conn.execute(STATE_DDL)
    with st.conn:
        mark_sent(st.conn, "events", 2)  # the collector acknowledged events 1 and 2 only
    now[0] = T0 + 4 * 86400 + 10
    deleted = st.prune(every_s=0)
    assert deleted["events"] == 2  # days 2 and 3 are old too, but still waiting to be sent
    ids = [r[0] for r in st.conn.execute("SELECT id FROM events ORDER BY id")]
    assert ids == [3, 4, 5]


def _full_after_start(st: Store) -> None:
    """The database cannot grow past what it holds now (SQLITE_FULL from here on)."""
    pages = st.conn.execute("PRAGMA page_count").fetchone()[0]
    st.conn.execute(f"PRAGMA max_page_count = {pages}")


def test_rows_lost_at_the_end_of_a_run_on_a_full_disk_are_counted_before_the_summary(tmp_path):
    st = make_store(tmp_path / "a.db", max_pending=100, retry_s=0)
    st.start_run({})
    _full_after_start(st)
    for i in range(250):
        st.add_window(T0 + i, i, i + 1, ["a"], [0.5])
    written = st.rows_written["windows"]
    st.end_run({"audio_s": 250.0})
    assert st.pending == 0
    assert st.dropped_rows == 250 - written  # the 150 that overflowed the buffer and the 100 left in it
    rows = st.conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
    record = json.loads(st.conn.execute("SELECT value FROM meta WHERE key = ?", (st.run_key,)).fetchone()[0])
    st.close()
    assert rows == written and st.dropped_rows == 250 - written  # close() finds nothing more to lose
    assert record["dropped_rows"] == st.dropped_rows and "ended_utc" in record  # the end record alone fitted


def _disk_full_for(monkeypatch, attempts: int) -> list:
    """sqlite3.connect fails as on a full card for the first ``attempts`` calls; returns the call log."""
    real, calls = sqlite3.connect, []

    def connect(*args, **kw):
        calls.append(args)
        if len(calls) <= attempts:
            raise sqlite3.OperationalError("database or disk is full")
        return real(*args, **kw)

    monkeypatch.setattr(sqlite3, "connect", connect)
    return calls


def test_a_full_disk_at_start_defers_logging_warns_once_a_minute_and_resumes(tmp_path, monkeypatch, caplog):
    from runtime.field.watchdog import _log_problem
    from runtime.store import writer

    calls = _disk_full_for(monkeypatch, attempts=2)
    now = [T0]
    st = make_store(tmp_path / "a.db", clock=lambda: now[0])  # does not raise: listening must go on
    assert st.conn is None and st.failing and st.start_run({"model_name": "m"}) is None
    for i in range(10):
        st.add_window(T0 + i, i, i + 1, ["a"], [0.5])
    st.add_event(event(1))
    assert not st.flush() and len(calls) == 1  # no retry before a minute has passed
    now[0] += writer.REOPEN_EVERY_S
    assert not st.flush() and len(calls) == 2
    assert sum("listening goes on" in r.getMessage() for r in caplog.records) == 2  # one warning per minute
    assert "NOT LOGGING" in _log_problem(st)  # on the systemd status line
    from runtime.field.status import collect_status, format_status

    shown = format_status(collect_status(tmp_path / "a.db", now[0], state=None))
    assert "problem:    logging suspended: disk full" in shown and "0 rows lost" in shown
    now[0] += writer.REOPEN_EVERY_S
    assert st.flush() and not st.failing  # space is back: the run is recorded, nothing buffered is lost
    assert "logging suspended" not in format_status(collect_status(tmp_path / "a.db", now[0], state=None))
    assert st.run_key == "run:000001" and st.dropped_rows == 0 and _log_problem(st) == ""
    assert st.conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0] == 10
    assert st.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    st.close()


def test_listen_starts_and_classifies_on_a_full_disk(tmp_path, monkeypatch, capsys):
    from runtime.cli.main import main
    from runtime.paths import DEMO_DIR

    _disk_full_for(monkeypatch, attempts=10**6)
    code = main(["listen", "--file", str(DEMO_DIR / "demo.wav"), "--db", str(tmp_path / "full.db"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1  # rows were lost: not 2 (refused to start)
    assert summary["audio_s"] > 30 and summary["blocks"] > 0 and summary["dropped_rows"] >= summary["blocks"]


def test_the_logging_state_file_stays_parseable_json_whatever_the_error(tmp_path):
    """A long non-ASCII error (escaped by json.dumps to 6 bytes a character) is shortened, never cut mid-JSON:
    the file keeps its pre-allocated size and `status` still reads the suspension."""
    from runtime.field.status import _logging_state
    from runtime.paths import logging_state_path

    db = tmp_path / "fieldear.db"
    st = make_store(db)
    st._suspend("é" * 300)
    data = logging_state_path(db).read_bytes()
    assert len(data) == Store.STATE_BYTES
    state = _logging_state(db)
    assert state is not None and state["error"].startswith("é") and state["rows_lost"] == 0
