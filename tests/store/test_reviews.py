"""Reviews in the device log: insert-only verdicts, migration of an older log, the queries, the CLI."""

import json
import sqlite3

import pytest

from runtime.cli.main import main
from runtime.errors import FieldearError
from runtime.store.queries import (
    EventFilter,
    count_events,
    query,
    reviewed_clips,
    reviewed_events,
)
from runtime.store.reviews import Review, add_review
from runtime.store.schema import SCHEMA_VERSION, connect, utc_iso
from runtime.store.writer import Store

pytestmark = pytest.mark.runtime

T0 = 1_780_000_000.0  # 2026-05-28


def make_log(path, labels=("dog", "rain", "dog", "rooster")):
    store = Store(path, device_id="dev-1", source="file:x.wav", model_sha="abc", clock=lambda: T0)
    for i, label in enumerate(labels):
        store.add_event({"label": label, "start_utc": utc_iso(T0 + 86400 * (i // 2) + i), "end_utc": utc_iso(T0 + i + 1),
                         "start_s": i, "end_s": i + 1, "peak": 0.5 + 0.1 * i, "mean": 0.4})
    store.set_clip_path(1, "clips/a_00000001_dog.wav", 0.25)
    store.set_clip_path(3, "clips/a_00000003_dog.wav")  # where it starts not known (as in logs before schema 4)
    store.close()
    return connect(path)


def test_verdicts_store_what_the_clip_is_and_reviews_are_insert_only(tmp_path):
    conn = make_log(tmp_path / "f.db")
    clock = iter([T0 + 10, T0 + 11, T0 + 12, T0 + 13]).__next__
    assert add_review(conn, Review(1, "confirm", "ana"), clock)["label"] == "dog"
    assert add_review(conn, Review(2, "reject", "ana"), clock)["label"] == "background"
    assert add_review(conn, Review(3, "relabel", "bo", "rooster"), clock)["label"] == "rooster"
    add_review(conn, Review(1, "reject", "bo"), clock)  # second thoughts: a new row, the old one stays
    rows = conn.execute("SELECT event_id, verdict, label, reviewer, device_id FROM reviews ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [(1, "confirm", "dog", "ana", "dev-1"), (2, "reject", "background", "ana", "dev-1"),
                                        (3, "relabel", "rooster", "bo", "dev-1"), (1, "reject", "background", "bo", "dev-1")]
    clips = reviewed_clips(conn)
    assert [(c["event_id"], c["event_label"], c["verdict"], c["label"]) for c in clips] == [
        (1, "dog", "reject", "background"), (2, "rain", "reject", "background"), (3, "dog", "relabel", "rooster")]
    assert clips[0]["clip_path"] == "clips/a_00000001_dog.wav" and clips[0]["reviewer"] == "bo"
    assert [c["clip_start_s"] for c in clips] == [0.25, None, None]


@pytest.mark.parametrize("review, needle", [
    (Review(1, "maybe", "ana"), "unknown verdict"),
    (Review(1, "relabel", "ana"), "needs the new label"),
    (Review(1, "confirm", "ana", "dog"), "takes no label"),
    (Review(1, "relabel", "ana", "../x"), "invalid label"),
    (Review(1, "confirm", ""), "reviewer"),
    (Review(99, "confirm", "ana"), "no event 99"),
])
def test_bad_reviews_are_refused_with_a_reason(tmp_path, review, needle):
    conn = make_log(tmp_path / "f.db")
    with pytest.raises(FieldearError, match=needle):
        add_review(conn, review)
    assert conn.execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 0


def test_a_version_1_log_gains_the_reviews_table(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, label TEXT NOT NULL, start_utc TEXT "
                      "NOT NULL, end_utc TEXT NOT NULL, start_s REAL NOT NULL, end_s REAL NOT NULL, peak REAL NOT NULL, "
                      "mean REAL NOT NULL, model_sha TEXT, device_id TEXT, source TEXT, settings_json TEXT, clip_path TEXT);"
                      "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
                      "INSERT INTO meta VALUES ('schema_version', '1');"
                      "INSERT INTO events (label, start_utc, end_utc, start_s, end_s, peak, mean) "
                      "VALUES ('dog', '2026-05-01T00:00:00.000Z', '2026-05-01T00:00:01.000Z', 0, 1, 0.9, 0.8);")
    old.commit()
    old.close()
    ro = connect(path, readonly=True)  # a reader of an old log sees no reviews, and no error
    assert reviewed_events(ro)[0]["verdict"] is None and reviewed_clips(ro) == []
    assert query(ro, "reviews").fetchall() == []
    ro.close()
    conn = connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION) == "4"
    add_review(conn, Review(1, "confirm", "ana"))
    assert reviewed_events(conn)[0]["verdict"] == "confirm"


def test_event_filters_by_label_day_score_and_review_state(tmp_path):
    conn = make_log(tmp_path / "f.db")
    add_review(conn, Review(2, "reject", "ana"))
    add_review(conn, Review(4, "confirm", "ana"))
    ids = lambda **kw: [r["id"] for r in reviewed_events(conn, EventFilter(**kw))]  # noqa: E731
    assert ids() == [4, 3, 2, 1]
    assert ids(label="dog") == [3, 1]
    assert ids(day=utc_iso(T0)[:10]) == [2, 1]
    assert ids(min_score=0.65) == [4, 3]
    assert ids(review="unreviewed") == [3, 1]
    assert ids(review="reviewed") == [4, 2]
    assert ids(review="reject") == [2]
    assert ids(limit=2, offset=1) == [3, 2]
    assert count_events(conn, EventFilter(review="unreviewed")) == 2
    row = reviewed_events(conn, EventFilter(review="confirm"))[0]
    assert (row["verdict"], row["review_label"], row["reviewer"]) == ("confirm", "rooster", "ana")
    with pytest.raises(FieldearError, match="unknown review state"):
        reviewed_events(conn, EventFilter(review="maybe"))


def test_cli_review_and_export_reviews(tmp_path, capsys):
    db = tmp_path / "f.db"
    make_log(db).close()
    assert main(["review", "3", "relabel", "rooster", "--db", str(db), "--by", "ana"]) == 0
    assert "event 3 relabel -> rooster by ana" in capsys.readouterr().out
    assert main(["review", "1", "reject", "--db", str(db), "--by", "bo"]) == 0
    assert main(["review", "9", "confirm", "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no event 9" in err[0]
    assert main(["review", "1", "relabel", "--db", str(db)]) == 2
    assert "needs the new label" in capsys.readouterr().err
    assert main(["export", "--db", str(db), "--what", "reviews", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["event_id"], r["verdict"], r["label"], r["reviewer"]) for r in rows] == [
        (3, "relabel", "rooster", "ana"), (1, "reject", "background", "bo")]
    assert set(rows[0]) == {"id", "event_id", "verdict", "label", "t_utc", "reviewer", "device_id"}
