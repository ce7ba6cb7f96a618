"""The JSON API and pages over a real listen log: events, filters, clips, spectrograms, reviews, CSRF."""

from __future__ import annotations

import sqlite3
import struct
import xml.etree.ElementTree as ET

import pytest

from tests.web.conftest import csrf

pytest.importorskip("flask")


def reviews_in(db) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT event_id, verdict, label, reviewer, t_utc FROM reviews ORDER BY id").fetchall()
    finally:
        conn.close()


def test_pages_render(client):
    for url, needle in (("/live", "audio level"), ("/detections", "spectrogram"), ("/counts", "<svg"),
                        ("/health", "Health history")):
        r = client.get(url)
        assert r.status_code == 200, url
        text = r.get_data(as_text=True)
        assert needle in text, url
        assert 'name="csrf-token"' in text
        assert "Content-Security-Policy" in r.headers and r.headers["X-Frame-Options"] == "DENY"
    assert client.get("/").status_code == 302


def test_counts_chart_is_valid_svg(client):
    text = client.get("/counts").get_data(as_text=True)
    svg = text[text.index("<svg"): text.index("</svg>") + 6]
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg") and root.findall(".//{http://www.w3.org/2000/svg}circle")


def test_events_list_and_filters(client):
    data = client.get("/api/events").get_json()
    assert data["total"] >= 4 and len(data["events"]) == data["total"]
    ids = [e["id"] for e in data["events"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    first = data["events"][0]
    assert first["clip_url"] == f"/api/events/{first['id']}/clip" and first["verdict"] is None
    label = first["label"]
    only = client.get(f"/api/events?label={label}").get_json()["events"]
    assert only and all(e["label"] == label for e in only)
    high = client.get("/api/events?min_score=0.99").get_json()["events"]
    assert all(e["peak"] >= 0.99 for e in high)
    day = first["start_utc"][:10]
    assert client.get(f"/api/events?day={day}").get_json()["total"] == data["total"]
    assert client.get("/api/events?day=1999-01-01").get_json()["total"] == 0
    assert client.get("/api/events?limit=2&offset=1").get_json()["events"] == data["events"][1:3]
    for bad in ("day=yesterday", "min_score=x", "limit=0", "limit=10000", "review=maybe"):
        r = client.get(f"/api/events?{bad}")
        assert r.status_code == 400 and r.get_json()["error"], bad


def test_clip_and_spectrogram(client, log_copy):
    ev = client.get("/api/events").get_json()["events"][0]
    r = client.get(ev["clip_url"])
    assert r.status_code == 200 and r.mimetype == "audio/wav" and r.data[:4] == b"RIFF"
    png = client.get(ev["spectrogram_url"])
    assert png.status_code == 200 and png.mimetype == "image/png"
    data = png.data
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert height == 96 and width > 10  # n_mels of the default bundle's frontend, frames along x
    # the same image by clip file name
    name = (log_copy.parent / "clips").glob("*.wav").__next__().name
    assert client.get(f"/api/clips/{name}").status_code == 200
    assert client.get(f"/api/spectrograms/{name}.png").data[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/api/events/999999/clip").status_code == 404


@pytest.mark.parametrize("path", [
    "/api/clips/../fieldear.db", "/api/clips/..%2ffieldear.db", "/api/clips/%2e%2e/fieldear.db",
    "/api/clips/..%2f..%2f..%2fetc%2fpasswd", "/api/clips//etc/passwd", "/api/clips/%2fetc%2fpasswd",
    "/api/spectrograms/../fieldear.db.png", "/api/spectrograms/..%2f..%2fclips.wav.png",
    "/api/clips/nothere.wav", "/api/clips/..", "/api/clips/%00.wav",
])
def test_path_traversal_is_refused(client, path):
    r = client.get(path, follow_redirects=True)  # werkzeug merges '//' with a redirect, then 404
    assert r.status_code in (400, 404), (path, r.status_code)
    assert b"SQLite" not in r.data and b"root:" not in r.data


def test_event_clip_path_outside_the_clips_dir_is_refused(client, log_copy):
    (log_copy.parent / "outside.wav").write_bytes((log_copy.parent / "clips").glob("*.wav").__next__().read_bytes())
    conn = sqlite3.connect(log_copy)
    with conn:
        conn.execute("UPDATE events SET clip_path = 'clips/../outside.wav' WHERE id = 1")
        conn.execute("UPDATE events SET clip_path = '/etc/passwd' WHERE id = 2")
    conn.close()
    for event_id in (1, 2):
        assert client.get(f"/api/events/{event_id}/clip").status_code == 404
        assert client.get(f"/api/events/{event_id}/spectrogram.png").status_code == 404


def test_review_needs_the_csrf_token(client, log_copy):
    assert client.post("/api/events/1/review", json={"action": "confirm"}).status_code == 403
    assert client.post("/api/events/1/review", json={"action": "confirm"},
                       headers={"X-CSRF-Token": "forged"}).status_code == 403
    other = client.application.test_client()  # another browser: its own session and token
    token_b = csrf(other)
    csrf(client)
    assert client.post("/api/events/1/review", json={"action": "confirm"},
                       headers={"X-CSRF-Token": token_b}).status_code == 403
    assert reviews_in(log_copy) == []
    assert client.post("/logout").status_code == 403  # every POST, not only the API


def test_get_never_changes_state(client, log_copy):
    assert client.get("/api/events/1/review?action=confirm").status_code == 405
    for url in ("/live", "/detections?review=unreviewed", "/api/events", "/api/status", "/api/csrf"):
        client.get(url)
    assert reviews_in(log_copy) == []


def test_post_reviews_are_stored_insert_only(client, log_copy):
    token = csrf(client)
    h = {"X-CSRF-Token": token}
    events = client.get("/api/events").get_json()["events"]
    e1, e2, e3 = events[0], events[1], events[2]
    r = client.post(f"/api/events/{e1['id']}/review", json={"action": "confirm", "by": "ana"}, headers=h)
    assert r.status_code == 201 and r.get_json()["review"]["label"] == e1["label"]
    assert client.post(f"/api/events/{e2['id']}/review", json={"action": "reject"}, headers=h).status_code == 201
    assert client.post(f"/api/events/{e3['id']}/review", json={"action": "relabel", "label": "background"},
                       headers=h).status_code == 201
    client.post(f"/api/events/{e1['id']}/review", json={"action": "relabel", "label": "dog", "by": "ana"}, headers=h)
    rows = reviews_in(log_copy)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (e1["id"], "confirm", e1["label"], "ana"), (e2["id"], "reject", "background", "web"),
        (e3["id"], "relabel", "background", "web"), (e1["id"], "relabel", "dog", "ana")]
    assert rows[0][4] == "2027-01-15T08:00:00.000Z"  # the app's clock
    latest = {e["id"]: e for e in client.get("/api/events?review=reviewed").get_json()["events"]}
    assert latest[e1["id"]]["verdict"] == "relabel" and latest[e1["id"]]["review_label"] == "dog"
    assert client.get("/api/events?review=unreviewed").get_json()["total"] == len(events) - 3
    detail = client.get(f"/api/events/{e1['id']}").get_json()
    assert [r["verdict"] for r in detail["reviews"]] == ["confirm", "relabel"]


@pytest.mark.parametrize("body, status, needle", [
    ({"action": "maybe"}, 400, "unknown verdict"),
    ({"action": "relabel"}, 400, "relabel needs the new label"),
    ({"action": "confirm", "label": "dog"}, 400, "takes no label"),
    ({"action": "relabel", "label": "../x"}, 400, "invalid label"),
    ({"action": "confirm", "by": "x" * 100}, 400, "invalid reviewer"),
    ({"action": ["confirm"]}, 400, "must be strings"),
    ("confirm", 400, "expected a JSON object"),
])
def test_bad_reviews_are_refused(client, log_copy, body, status, needle):
    r = client.post("/api/events/1/review", json=body, headers={"X-CSRF-Token": csrf(client)})
    assert r.status_code == status and needle in r.get_json()["error"]
    assert reviews_in(log_copy) == []


def test_review_of_a_missing_event_is_404(client):
    r = client.post("/api/events/999999/review", json={"action": "confirm"}, headers={"X-CSRF-Token": csrf(client)})
    assert r.status_code == 404


def test_status_counts_health(client):
    s = client.get("/api/status").get_json()
    assert s["running"] is False and s["events_total"] >= 4  # the run ended
    assert s["last_events"] and s["level"]["rms_dbfs"] < 0 and s["heartbeat"]["kind"] == "stop"
    assert s["blocks_per_s"] is not None and s["blocks_per_s"] > 0
    counts = client.get("/api/counts").get_json()["counts"]
    assert sum(c["events"] for c in counts) == s["events_total"]
    health = client.get("/api/health").get_json()["health"]
    assert health and health[-1]["kind"] == "stop"
    assert client.get("/api/health?limit=x").status_code == 400


def test_the_writer_is_not_blocked_while_the_server_reads(client, log_copy):
    """A listener-like writer commits while a page request holds its read-only connection open."""
    from runtime.store.schema import connect

    writer = connect(log_copy, timeout=0.5)
    with client.application.test_request_context("/api/events"):
        from runtime.web.app import db

        reader = db()
        cur = reader.execute("SELECT id FROM events")
        cur.fetchone()  # a read transaction is open
        with writer:
            writer.execute("INSERT INTO health(t_utc, device_id, json) VALUES ('2030-01-01T00:00:00.000Z', 'd', '{}')")
        with pytest.raises(sqlite3.OperationalError):
            reader.execute("INSERT INTO health(t_utc, device_id, json) VALUES ('x', 'd', '{}')")  # mode=ro
    writer.close()


def test_scores_over_time(client):
    ev = client.get("/api/events").get_json()["events"][-1]
    data = client.get(f"/api/events/{ev['id']}/scores").get_json()
    assert data["label"] == ev["label"] and len(data["points"]) >= 3
    times = [t for t, _ in data["points"]]
    assert times == sorted(times) and times[0] <= ev["start_s"] and times[-1] >= ev["start_s"]
    assert max(s for _, s in data["points"]) >= 0.5  # the event came from these scores
    page = client.get("/detections").get_data(as_text=True)
    assert page.count('class="spark"') == client.get("/api/events").get_json()["total"]
