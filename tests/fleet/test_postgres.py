"""The central database on PostgreSQL: a real server started by the tests (tests/fleet/postgres.py, the Debian
packages), the same schema, accounting and reports as the SQLite file, end to end through a real Mosquitto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.cli.main import main as cli_main
from runtime.errors import FieldearError
from tests.fleet.broker import CollectorThread, add_event, add_health, wait_until

mqtt = pytest.importorskip("paho.mqtt.client")
ROOT = Path(__file__).resolve().parents[2]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _event(device: str, event_id: int, label: str | None = "dog", start_utc="2026-05-01T04:12:07.250Z",
           generation: str | None = None, **extra) -> bytes:
    msg = {"id": f"{device}:{event_id}", "device_id": device, "event_id": event_id, "label": label,
           "start_utc": start_utc, "end_utc": start_utc, "start_s": 1.0, "end_s": 2.0, "peak": 0.9 - event_id / 100,
           "mean": 0.8, "settings": {"smoothing": 3}, "sent_ts": 99.0, **extra}
    if generation:
        msg["generation"] = generation
    return json.dumps(msg).encode()


# one message sequence with every outcome: stored, duplicate, conflict, legacy copy, rejected, status
MESSAGES = [
    ("fieldear/d1/events", _event("d1", 1)),
    ("fieldear/d1/events", _event("d1", 1)),  # redelivered
    ("fieldear/d2/events", _event("d2", 1, backlog=4)),  # same id, other device
    ("fieldear/d1/events", _event("d1", 1, label="rain")),  # same key, other content
    ("fieldear/d1/events", _event("d1", 1, generation="g1")),  # the legacy row, re-sent with a generation
    ("fieldear/d1/events", _event("d1", 2, generation="g1", start_utc="2026-05-02T23:59:59.000Z")),
    ("fieldear/d1/events", _event("d1", 2, generation="g2", label="rooster")),  # a recreated log: beside it
    ("fieldear/d3/events", _event("d3", 1, label=None, start_utc=1777777777.5)),  # no label, numeric start
    ("fieldear/d3/events", _event("d3", 1, label=None, start_utc=1777777777.5)),
    ("fieldear/d3/events", _event("d3", 2, label="dog", start_utc=None)),  # day of receipt
    ("fieldear/d1/events", b"{not json"),
    ("fieldear/d1/events", b'{"label": "dog"}'),
    ("fieldear/d1/nonsense", b"{}"),
    ("fieldear/d1/status", b"offline"),
    ("fieldear/d4/status", b"online"),
    ("fieldear/d1/health", json.dumps({"health_id": 1, "t_utc": "x", "health": {"t": 40}, "generation": "g1"}).encode()),
    ("fieldear/d1/health", json.dumps({"health_id": 1, "t_utc": "x", "health": {"t": 40}, "generation": "g1"}).encode()),
    ("fieldear/c/health", json.dumps({"health_id": 1, "t_utc": "2026-05-03T00:00:00Z", "health": None, "backlog": 2}).encode()),
    ("fieldear/d1/reviews", json.dumps({"review_id": 4, "event_id": 1, "verdict": "reject", "label": "background",
                                        "t_utc": "x", "reviewer": "ana", "generation": "g1"}).encode()),
    ("fieldear/d1/reviews", json.dumps({"review_id": 4, "event_id": 1, "verdict": "reject", "label": "background",
                                        "t_utc": "x", "reviewer": "ana", "generation": "g1"}).encode()),
    ("fieldear/d1/reviews", b'{"review_id": 5}'),
]


def _collector(db, clock=lambda: 1777800000.25):
    from runtime.fleet.central.collector import Collector
    from runtime.fleet.mqtt import MqttSettings

    return Collector(db, MqttSettings(host="127.0.0.1"), clock=clock)


def _rows(store, table: str, cols: str) -> list[tuple]:
    rows = store.execute(f"SELECT {cols} FROM {table} ORDER BY {cols}").fetchall()
    store.rollback()
    return [tuple(r) for r in rows]


def test_same_outcomes_rows_and_counts_as_sqlite(tmp_path, pg_url):
    from runtime.fleet.central.store import PostgresStore, SqliteStore, open_store

    results = {}
    for name, db in (("sqlite", str(tmp_path / "central.db")), ("postgres", pg_url)):
        col = _collector(db)
        store = open_store(db)
        assert isinstance(store, PostgresStore if name == "postgres" else SqliteStore)
        outcomes = [col.handle(store, topic, payload) for topic, payload in MESSAGES]
        s = col.stats
        results[name] = {
            "outcomes": outcomes,
            "stats": (s.events, s.health, s.reviews, s.status, s.duplicates, s.conflicts, s.rejected, s.messages),
            "acks": sorted((t, json.dumps(p, sort_keys=True)) for t, p in col.take_acks()),
            "events": _rows(store, "events", "device_id, generation, event_id, label, start_utc, end_utc, start_s, "
                                             "peak, settings_json, sent_ts, received_ts"),
            "health": _rows(store, "health", "device_id, generation, health_id, t_utc, json"),
            "reviews": _rows(store, "reviews", "device_id, generation, review_id, event_id, verdict, label, reviewer"),
            "devices": _rows(store, "devices", "device_id, generation, last_seen_ts, backlog, lag_s"),
            "status": _rows(store, "status", "device_id, state"),
            "status_log": _rows(store, "status_log", "device_id, state, retained"),
        }
        store.close()
    sq, pg = results["sqlite"], results["postgres"]
    assert sq["outcomes"] == ["stored", "duplicate", "stored", "conflict", "duplicate", "stored", "stored", "stored",
                              "duplicate", "stored", "rejected", "rejected", "rejected", "status", "status", "stored",
                              "duplicate", "stored", "stored", "duplicate", "rejected"]
    for key in sq:
        if key == "events":  # a numeric start_utc is kept as its text on PostgreSQL (an untyped column in SQLite)
            assert [r[:4] + r[6:] for r in pg[key]] == [r[:4] + r[6:] for r in sq[key]]
            assert [r[4:6] for r in pg[key]] == [tuple(None if v is None else str(v) for v in r[4:6]) for r in sq[key]]
        else:
            assert pg[key] == sq[key], key


def test_schema_version_table_and_migrations(pg_url):
    import psycopg

    from runtime.fleet.central.store import CENTRAL_VERSION, open_store

    with pytest.raises(FieldearError, match="not a fieldear central database"):
        open_store(pg_url, readonly=True)  # nothing created by a reader
    open_store(pg_url).close()
    open_store(pg_url).close()  # opening again changes nothing
    with psycopg.connect(pg_url) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM schema_version")] == [CENTRAL_VERSION]
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        assert tables == {"schema_version", "events", "health", "reviews", "devices", "status", "status_log"}
        assert conn.execute("SELECT to_regclass('events_received') IS NOT NULL").fetchone()[0]
        # the key: (device, generation, id)
        conn.execute("INSERT INTO events (device_id, generation, event_id, received_ts) VALUES ('d', 'g', 1, 1)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO events (device_id, generation, event_id, received_ts) VALUES ('d', 'g', 1, 1)")
        conn.rollback()
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (CENTRAL_VERSION + 1,))
        conn.commit()
    for readonly in (False, True):
        with pytest.raises(FieldearError, match="newer than this fieldear"):
            open_store(pg_url, readonly=readonly)


def test_migrations_of_two_collectors_starting_together(pg_url):
    """The advisory lock: two openers at once, one migration, no error."""
    import threading

    import psycopg

    from runtime.fleet.central.store import open_store

    errors = []

    def opener():
        try:
            open_store(pg_url).close()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1


def _device_log(path: Path):
    from runtime.store.schema import connect

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = connect(path)
    generation = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]
    return conn, generation


def _central(url: str, table: str, cols: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(f"SELECT {cols} FROM {table} ORDER BY {cols}")]


def test_collector_end_to_end_through_mosquitto_into_postgres(tmp_path, broker, pg_url, capsys):
    """Devices send events, health and reviews through a real broker to two collectors, one on PostgreSQL, one on
    SQLite (same fixed clock): every row once in each (re-published duplicates not doubled), a recreated device log
    stored beside the old one, and `fieldear report` prints the same from both."""
    from runtime.fleet.mqtt import MqttSettings, send_pending
    from runtime.store.reviews import Review, add_review

    settings = MqttSettings.from_config(None, broker.address)
    sqlite_db = tmp_path / "central.db"
    clock = lambda: 1777800000.5  # noqa: E731
    pg_thread = CollectorThread(pg_url, broker.address, clock=clock)
    pg_thread.collector.client_id = "fieldear-collector-pg"
    sq_thread = CollectorThread(sqlite_db, broker.address, clock=clock)
    sq_thread.collector.client_id = "fieldear-collector-sqlite"
    path = tmp_path / "dev.db"
    generations = []
    with pg_thread as pg_col, sq_thread as sq_col:
        for labels in (["dog", "rain", "dog", "rooster"], ["rooster", "dog"]):  # the second: a recreated log
            log, generation = _device_log(path)
            generations.append(generation)
            ids = [add_event(log, "pg-1", label, float(i), t_utc=f"2026-05-0{1 + i % 2}T10:00:00.000Z")
                   for i, label in enumerate(labels)]
            assert ids == list(range(1, len(labels) + 1))
            add_health(log, "pg-1", {"temp_c": 41.5})
            add_review(log, Review(event_id=1, verdict="relabel", reviewer="ana", label="cat"))
            log.close()
            result = send_pending(path, settings, "pg-1", timeout_s=15)
            assert result.status.total_pending == 0, result
            assert result.acked["events"] == len(labels)
        for other in ("pg-2", "pg-3"):
            log, _ = _device_log(tmp_path / f"{other}.db")
            for i in range(3):
                add_event(log, other, "dog" if i else "siren", float(i))
            log.close()
            assert send_pending(tmp_path / f"{other}.db", settings, other, timeout_s=15).status.total_pending == 0
        assert wait_until(lambda: sq_col.stats.events == pg_col.stats.events == 12, 10)
        # the broker delivers copies again (a device re-sending after a lost ack): acknowledged, not stored twice
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="resender")
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        try:
            copy = json.dumps({"event_id": 1, "generation": generations[1], "label": "rooster",
                               "start_utc": "2026-05-01T10:00:00.000Z", "device_id": "pg-1"})
            infos = [pub.publish("fieldear/pg-1/events", copy, qos=1) for _ in range(3)]
            for info in infos:
                info.wait_for_publish(5)
        finally:
            pub.disconnect()
            pub.loop_stop()
        assert wait_until(lambda: pg_col.stats.duplicates >= 3 and sq_col.stats.duplicates >= 3, 10)
        pg_stats, sq_stats = pg_col.stats, sq_col.stats
    assert (pg_stats.events, pg_stats.health, pg_stats.reviews, pg_stats.conflicts, pg_stats.db_errors) == \
        (12, 2, 2, 0, 0)
    assert (pg_stats.events, pg_stats.health, pg_stats.reviews, pg_stats.duplicates, pg_stats.conflicts) == \
        (sq_stats.events, sq_stats.health, sq_stats.reviews, sq_stats.duplicates, sq_stats.conflicts)
    events = _central(pg_url, "events", "device_id, generation, event_id, label")
    assert len(events) == len(set(events)) == 12
    assert [e[1:] for e in events if e[0] == "pg-1"] == sorted(
        [(generations[0], 1, "dog"), (generations[0], 2, "rain"), (generations[0], 3, "dog"),
         (generations[0], 4, "rooster"), (generations[1], 1, "rooster"), (generations[1], 2, "dog")])
    assert _central(pg_url, "health", "device_id, generation, health_id, json") == sorted(
        [("pg-1", g, 1, '{"temp_c": 41.5}') for g in generations])
    assert _central(pg_url, "reviews", "device_id, generation, review_id, event_id, verdict, label") == sorted(
        [("pg-1", g, 1, 1, "relabel", "cat") for g in generations])
    import sqlite3

    with sqlite3.connect(sqlite_db) as conn:
        assert sorted(conn.execute("SELECT device_id, generation, event_id, label FROM events")) == events
    capsys.readouterr()
    for by in ("device", "label", "day"):
        assert cli_main(["report", "--db", pg_url, "--by", by]) == 0
        from_pg = capsys.readouterr().out
        assert cli_main(["report", "--db", str(sqlite_db), "--by", by]) == 0
        from_sqlite = capsys.readouterr().out
        assert from_pg == from_sqlite, by
        assert len(from_pg.splitlines()) >= 4


def test_report_from_postgres_equals_report_from_sqlite(tmp_path, pg_url, capsys):
    """Every outcome of MESSAGES (numeric and missing starts, no label, status-only and health-only devices)."""
    from runtime.fleet.central.store import open_store

    dbs = {"sqlite": str(tmp_path / "central.db"), "postgres": pg_url}
    for db in dbs.values():
        times = iter(1777800000.0 + 3600.0 * i for i in range(1000))
        col = _collector(db, clock=lambda t=times: next(t))
        with open_store(db) as store:
            for topic, payload in MESSAGES:
                col.handle(store, topic, payload)
    outputs = {}
    for name, db in dbs.items():
        for by in ("device", "label", "day"):
            assert cli_main(["report", "--db", db, "--by", by]) == 0
            outputs[name, by] = capsys.readouterr().out
    for by in ("device", "label", "day"):
        assert outputs["postgres", by] == outputs["sqlite", by], by
    day = [line.split() for line in outputs["postgres", "day"].splitlines()[2:]]
    assert [d[0] for d in day] == sorted(d[0] for d in day) and len(day) >= 3
    label = [line.split() for line in outputs["postgres", "label"].splitlines()[2:]]
    assert label[0][:2] == ["dog", "4"]


def test_collect_command_into_postgres_until_sigterm(tmp_path, broker, pg_url):
    from runtime.fleet.mqtt import MqttSettings, send_pending

    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "collect", "--broker", broker.address,
                             "--db", pg_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=ROOT)
    try:
        assert wait_until(lambda: broker.log_path.exists() and
                          "fieldear-collector 1 fieldear/+/status" in broker.log_path.read_text(), 15)
        log, _ = _device_log(tmp_path / "dev.db")
        for i in range(5):
            add_event(log, "cli-pg", "dog", float(i))
        log.close()
        r = send_pending(tmp_path / "dev.db", MqttSettings.from_config(None, broker.address), "cli-pg", timeout_s=15)
        assert r.status.total_pending == 0
        assert len(_central(pg_url, "events", "device_id, event_id")) == 5
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()
    assert b"collected 5 events" in out and pg_url.encode() in out


def _one_line_error(args: list[str], pre: str = "") -> str:
    code = f"import sys; {pre}from runtime.cli.main import main; sys.exit(main({args!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT,
                          timeout=60)
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_without_psycopg_a_postgres_url_is_one_line_with_the_pip_hint():
    block = "sys.modules['psycopg'] = None; "  # as if not installed
    for args in (["collect", "--broker", "127.0.0.1:1", "--db", "postgresql://u@127.0.0.1:1/central"],
                 ["report", "--db", "postgresql://u@127.0.0.1:1/central"]):
        line = _one_line_error(args, block)
        assert "needs psycopg" in line and "pip install 'fieldear[postgres]'" in line, line


def test_sqlite_never_imports_psycopg(tmp_path):
    db = tmp_path / "c.db"
    code = ("import sys; from runtime.cli.main import main; from runtime.fleet.central.collector import open_central; "
            f"open_central({str(db)!r}).close(); main(['report', '--db', {str(db)!r}]); "
            "sys.exit('psycopg' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), timeout=60,
                          capture_output=True).returncode == 0


def test_urls_in_messages_have_no_password():
    from runtime.fleet.central.store import redact_url

    assert redact_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql://u@h/db?sslmode=require&password=pw") == \
        "postgresql://u@h/db?sslmode=require&password=***"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_an_unreachable_server_is_one_line_without_the_password(postgres_server):
    from tests.fleet.broker import free_port

    url = f"postgresql://fieldear:s3cret@127.0.0.1:{free_port()}/central"
    for args in (["collect", "--broker", "127.0.0.1:1", "--db", url], ["report", "--db", url]):
        line = _one_line_error(args)
        assert "cannot connect to the central database" in line and "s3cret" not in line, line
        assert "fieldear:***@127.0.0.1" in line


def test_the_collector_survives_a_postgres_restart(tmp_path, broker):
    """The server goes away under a running collector (pg_ctl stop -m fast, start): messages that arrive
    meanwhile are not acknowledged; after the restart the collector reconnects and every event is stored once."""
    from runtime.fleet.mqtt import MqttSettings, send_pending
    from tests.fleet.postgres import Postgres, require_postgres

    server = Postgres(require_postgres())  # its own server: this test stops it
    server.start()
    try:
        url = server.new_database()
        settings = MqttSettings.from_config(None, broker.address)
        log, _ = _device_log(tmp_path / "dev.db")
        with CollectorThread(url, broker.address) as col:
            col.collector.backoff_s = (0.1, 0.5)
            for i in range(3):
                add_event(log, "rs-1", "dog", float(i))
            assert send_pending(tmp_path / "dev.db", settings, "rs-1", timeout_s=15).status.total_pending == 0
            server._run(str(server.bindir / "pg_ctl"), "-D", str(server.data), "-m", "fast", "-w", "stop")
            for i in range(3, 6):
                add_event(log, "rs-1", "rain", float(i))
            away = send_pending(tmp_path / "dev.db", settings, "rs-1", timeout_s=2)
            assert away.status.pending["events"] == 3  # not stored, not acknowledged
            assert wait_until(lambda: col.stats.db_errors >= 1, 10)
            server._run(str(server.bindir / "pg_ctl"), "-D", str(server.data), "-l", str(server.log_path),
                        "-o", f"-p {server.port} -c listen_addresses={server.host} "
                        f"-c unix_socket_directories={server.sock}", "-w", "start")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if send_pending(tmp_path / "dev.db", settings, "rs-1", timeout_s=3).status.total_pending == 0:
                    break
            else:
                pytest.fail("events not acknowledged after the server came back")
        log.close()
        events = _central(url, "events", "device_id, event_id, label")
        assert events == [("rs-1", i + 1, "dog" if i < 3 else "rain") for i in range(6)]
    finally:
        server.stop()


def test_two_collectors_on_one_postgres_store_each_event_once(tmp_path, broker, pg_url):
    """Redundant collectors (own client ids, both subscribed) into one PostgreSQL database: every message reaches
    both, each row is stored by one of them and counted as a duplicate by the other."""
    from runtime.fleet.mqtt import MqttSettings, send_pending

    a = CollectorThread(pg_url, broker.address)
    a.collector.client_id = "fieldear-collector-a"
    b = CollectorThread(pg_url, broker.address)
    b.collector.client_id = "fieldear-collector-b"
    log, _ = _device_log(tmp_path / "dev.db")
    for i in range(40):
        add_event(log, "twin-1", "dog" if i % 3 else "rain", float(i))
    log.close()
    with a, b:
        r = send_pending(tmp_path / "dev.db", MqttSettings.from_config(None, broker.address), "twin-1", timeout_s=15)
        assert r.status.total_pending == 0
        assert wait_until(lambda: a.stats.events + a.stats.duplicates == b.stats.events + b.stats.duplicates == 40
                          or a.stats.events + b.stats.events > 40, 10)
    assert a.stats.events + b.stats.events == 40
    assert a.stats.conflicts == b.stats.conflicts == a.stats.db_errors == b.stats.db_errors == 0
    assert _central(pg_url, "events", "event_id") == [(i,) for i in range(1, 41)]


def test_through_a_mosquitto_bridge(tmp_path, pg_url):
    """docs/operations.md, "When one broker is not enough": a device on a site broker bridged to the central one
    (the bridge config of the docs); the collector at the centre stores into PostgreSQL, acks come back over the
    bridge and empty the device's outbox."""
    from runtime.fleet.mqtt import MqttSettings, send_pending
    from tests.fleet.broker import Broker, require_mosquitto

    require_mosquitto()
    centre = Broker(tmp_path / "centre")
    site = Broker(tmp_path / "site")
    with site.conf.open("a") as f:
        f.write("\n".join([
            "connection centre", f"address {centre.address}", "remote_clientid site-north-bridge",
            "cleansession false", "restart_timeout 1",
            *(f"topic fieldear/+/{kind} out 1" for kind in ("events", "health", "reviews", "status")),
            "topic fieldear/+/ack in 1", ""]))
    centre.start()
    try:
        site.start()
        try:
            assert wait_until(lambda: "site-north-bridge" in centre.log_path.read_text(), 15)
            log, _ = _device_log(tmp_path / "dev.db")
            for i in range(10):
                add_event(log, "site-1", "dog", float(i))
            add_health(log, "site-1", {"temp_c": 39.0})
            log.close()
            with CollectorThread(pg_url, centre.address) as col:
                r = send_pending(tmp_path / "dev.db", MqttSettings.from_config(None, site.address), "site-1",
                                 timeout_s=20)
                assert r.status.total_pending == 0, r
                assert col.stats.events == 10 and col.stats.health == 1
        finally:
            site.stop()
    finally:
        centre.stop()
    assert _central(pg_url, "events", "device_id, event_id") == [("site-1", i) for i in range(1, 11)]


def test_metrics_read_the_postgres_store(pg_url):
    pytest.importorskip("prometheus_client")
    from runtime.fleet.central.metrics import CollectorMetrics
    from runtime.fleet.central.store import open_store

    col = _collector(pg_url, clock=lambda: 1000.0)
    with open_store(pg_url) as store:
        for i in range(3):
            col.handle(store, "fieldear/m-1/events", _event("m-1", i + 1, generation="g", backlog=5 - i))
    families = {f.name: f for f in CollectorMetrics(col).collect()}
    assert [(s.labels, s.value) for s in families["fieldear_device_events"].samples] == [({"device": "m-1"}, 3)]
    assert [s.value for s in families["fieldear_device_backlog"].samples] == [3]
    assert [s.value for s in families["fieldear_device_last_seen_timestamp_seconds"].samples] == [1000.0]


def test_missing_server_binaries_skip_here_and_fail_under_ci(monkeypatch):
    import tests.fleet.postgres as pgmod

    monkeypatch.setattr(pgmod, "find_pg_bin", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL server binaries not found"):
        pgmod.require_postgres()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        pgmod.require_postgres()
