"""`train --update BUNDLE --reviews DB` on real audio: a real `fieldear listen --file demo.wav --clips` run makes
the device log, people's reviews are added to it (confirm, reject, relabel), and the small bundle is refitted
from them: the report counts them, rejected clips are hard negatives, held-out reviews compare old and new, a
further update keeps them; bad logs give one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.cli.main import main
from tests.convert.test_train import _one_line_error

pytestmark = pytest.mark.train

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "runtime" / "demo" / "demo.wav"


def _listen(db: Path) -> list[dict]:
    """A real `fieldear listen --file demo.wav --clips` run (the default model) into ``db``; its events."""
    import sqlite3

    subprocess.run([sys.executable, "-m", "runtime.cli.main", "-q", "listen", "--file", str(DEMO), "--db", str(db),
                    "--clips", "--device-id", "test-device"], check=True, cwd=ROOT, timeout=300)
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT id, label, clip_path FROM events ORDER BY id")]
    finally:
        conn.close()


def _review(db: Path, verdicts: dict[int, tuple[str, str | None]]) -> None:
    from runtime.store.reviews import Review, add_review
    from runtime.store.schema import connect

    conn = connect(db)
    try:
        for event_id, (verdict, label) in verdicts.items():
            add_review(conn, Review(event_id, verdict, "tester", label))
    finally:
        conn.close()


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict:
    """Two device logs of the demo. The first: every event reviewed (a dog, the rooster and the crying baby
    confirmed, the great tit and any further event the model found rejected, another dog relabelled to rooster).
    The second: a review of a label the bundle lacks, one whose clip is gone, and one event reviewed twice."""
    root = tmp_path_factory.mktemp("device")
    db = root / "a" / "fieldear.db"
    db.parent.mkdir()
    events = _listen(db)
    by_label = {}
    for e in events:
        by_label.setdefault(e["label"], []).append(e["id"])
    assert len(by_label.get("dog", [])) >= 2 and {"rooster", "crying_baby", "great_tit"} <= set(by_label), events
    dogs = by_label["dog"]
    verdicts = {dogs[0]: ("confirm", None), dogs[1]: ("relabel", "rooster"),
                by_label["rooster"][0]: ("confirm", None), by_label["crying_baby"][0]: ("confirm", None),
                by_label["great_tit"][0]: ("reject", None)}
    for e in events:  # whatever else the model called an event
        verdicts.setdefault(e["id"], ("reject", None))
    _review(db, verdicts)
    other = root / "b" / "fieldear.db"
    other.parent.mkdir()
    events_b = _listen(other)
    ids = {e["label"]: e["id"] for e in events_b}
    gone = next(e for e in events_b if e["label"] == "dog")
    (other.parent / gone["clip_path"]).unlink()
    _review(other, {gone["id"]: ("confirm", None), ids["great_tit"]: ("relabel", "owl"),
                    ids["rooster"]: ("reject", None)})
    _review(other, {ids["rooster"]: ("confirm", None)})  # the latest verdict counts
    empty = root / "c" / "fieldear.db"
    empty.parent.mkdir()
    _listen(empty)
    return {"db": db, "other": other, "empty": empty, "verdicts": verdicts, "events": events}


def test_update_from_reviews(model, logs, cache, tmp_path, capsys, caplog):
    from convert.openset.reviews import is_held_out
    from runtime.model.bundle import load_bundle, sha256_file

    old = load_bundle(model)
    out = tmp_path / "reviewed"
    assert main(["train", "--update", str(model), "--reviews", str(logs["db"]), "--reviews", str(logs["other"]),
                 "--out", str(out), "--cache", str(cache)]) == 0
    assert "held-out reviews" in capsys.readouterr().out
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("1 reviewed event(s) without a saved clip" in w for w in warned)
    assert any("owl (1)" in w for w in warned)
    new = load_bundle(out)
    assert new.labels == old.labels and new.stages[0].sha256 == old.stages[0].sha256
    report = json.loads((out / "report.json").read_text())
    r = report["update"]["reviews"]
    # log a: every event reviewed; log b: 3 events reviewed (one twice), one clip gone, one label unknown; its
    # rooster confirmation is the same clip (same sha256) as log a's rooster: counted once
    n_a = len(logs["verdicts"])
    n_reject = sum(v == "reject" for v, _ in logs["verdicts"].values())
    assert n_a >= 5 and n_reject >= 1
    assert r["reviewed_events"] == n_a + 3 and r["missing_clips"] == 1 and r["skipped_unknown_label"] == {"owl": 1}
    assert r["clips"] == n_a
    assert r["by_action"] == {"confirm": 3, "reject": n_reject, "relabel": 1}
    assert r["by_action_label"]["reject"] == {"background": n_reject}
    assert r["by_action_label"]["relabel"] == {"rooster": 1}
    assert r["by_action_label"]["confirm"] == {"crying_baby": 1, "dog": 1, "rooster": 1}
    # the held-out share is stable (by sha256) and never trained on
    clips = {}
    for e in logs["events"]:
        if e["id"] in logs["verdicts"]:
            clips[e["id"]] = sha256_file(logs["db"].parent / e["clip_path"])
    held = {i for i, sha in clips.items() if is_held_out(sha)}
    assert r["held_out"] == len(held)
    rejected = {clips[i] for i, (v, _) in logs["verdicts"].items() if v == "reject"}
    positives = {clips[i] for i, (v, _) in logs["verdicts"].items() if v != "reject"}
    with np.load(out / "training.npz") as z:
        hard, shas, review = set(map(str, z["hard_sha"])) - {""}, [str(s) for s in z["sha"]], z["review"]
        n_old = len(np.load(model / "training.npz")["y"])
        assert len(shas) == n_old + len(positives - {clips[i] for i in held})
    # rejected clips (not held out) are the hard negatives, in the negative pool and in training.npz
    assert hard == {s for s in rejected if not is_held_out(s)}
    assert report["stream"]["negatives"]["hard_negatives"] == len(hard)
    assert r["trained"]["negatives"] == len(hard)
    assert {s for s, f in zip(shas, review) if f} == {s for s in positives if not is_held_out(s)}
    # the held-out comparison: old and new bundle on the same clips
    cmp_ = r["held_out_comparison"]
    if held:
        n_pos = sum(1 for i in held if logs["verdicts"][i][0] != "reject")
        for side in ("before", "after"):
            assert cmp_[side]["positives"] == n_pos and cmp_[side]["negatives"] == len(held) - n_pos
            assert 0 <= cmp_[side]["detected"] <= n_pos and 0 <= cmp_[side]["false_alarms"] <= len(held) - n_pos
    else:
        assert cmp_ is None
    md = (out / "report.md").read_text()
    assert "### Reviews from the field" in md and "On held-out reviews" in md and "review:rejected" in md

    # a further update (here with the same log again) keeps the reviewed clips once, not twice
    again = tmp_path / "again"
    assert main(["train", "--update", str(out), "--reviews", str(logs["db"]), "--out", str(again),
                 "--cache", str(cache)]) == 0
    with np.load(again / "training.npz") as z:
        assert len(z["y"]) == len(shas) and set(map(str, z["hard_sha"])) - {""} == hard
    # and an update with no reviews (a background only) keeps them too
    site = tmp_path / "site"
    site.mkdir()
    from tests.conftest import shared_path

    shutil.copyfile(sorted(shared_path("soundscapes", "forest_24h").glob("*.wav"))[1], site / "site.wav")
    third = tmp_path / "third"
    assert main(["train", "--update", str(again), "--background", str(site), "--out", str(third),
                 "--cache", str(cache)]) == 0
    with np.load(third / "training.npz") as z:
        assert int(z["review"].sum()) == int(review.sum()) and set(map(str, z["hard_sha"])) - {""} == hard
    assert json.loads((third / "report.json").read_text())["stream"]["negatives"]["hard_negatives"] == len(hard)


def test_bad_review_logs_give_one_line_errors(model, logs, tmp_path, capsys):
    out = str(tmp_path / "out")
    update = ["train", "--update", str(model), "--out", out]
    assert "has no reviewed events" in _one_line_error(capsys, update + ["--reviews", str(logs["empty"])])
    missing = tmp_path / "nowhere" / "fieldear.db"
    assert "no such log database" in _one_line_error(capsys, update + ["--reviews", str(missing)])
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    assert "cannot read the log" in _one_line_error(capsys, update + ["--reviews", str(junk)])
    assert "--update needs --background DIR" in _one_line_error(capsys, update)
    assert "--reviews needs --update" in _one_line_error(capsys, ["train", str(tmp_path), "--out", out,
                                                                  "--reviews", str(logs["db"])])
    assert not Path(out).exists()
