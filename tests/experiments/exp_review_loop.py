"""Experiment, not part of `make bench`: the review loop on ESC-10 streams (issue 13 item 4).

    .venv/bin/python -m tests.experiments.exp_review_loop [--work DIR] [--esc10 ../shared/data/esc10]

A small bundle (dog, rooster, crying_baby: 8 ESC-10 clips each) listens (`fieldear listen --file --clips`) to
stream A: 8 unseen clips of each of its labels and of seven other ESC-10 classes, in random order, 1.5 s
apart. Every detection is reviewed from the truth (overlaps a clip of its label: confirm, else reject);
`train --update --reviews` refits the head; the old and the new bundle listen to stream B (other clips of the
same classes). Prints false alarms per hour (events overlapping no clip of their label) and recall (share of
target clips with an event of their label) on B, before and after.

Measured 2026-12-03 on this machine (one seed): stream A 8.7 min, 33 events, 10 rejected, 23 confirmed; 15 of
the 33 held out, 13 positives and 5 hard negatives trained on; update 19 s. Stream B (8.6 min): before 69.4
false alarms/h, recall 0.958; after 34.7/h, recall 0.833 (false alarms halved, but recall 12.5 points lower: the
issue's "at most 5 points" is not met). With the bundle of tests/convert/test_update_reviews.py (other training
clips, an MLP head, 3 rejected of 24) the same loop went from 41.6 to 83.3/h at recall 0.958: the update's
recalibration lowered the stream thresholds (its validation streams hold no sounds like the other ESC-10 classes).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGETS = ("dog", "rooster", "crying_baby")
OTHERS = ("chainsaw", "clock_tick", "crackling_fire", "helicopter", "rain", "sea_waves", "sneezing")
CLI = [sys.executable, "-m", "runtime.cli.main", "-q"]


def make_stream(esc: Path, exclude: set[str], half: int, path: Path):
    import soundfile as sf

    rng = np.random.default_rng(half)
    items = []
    for lab in TARGETS + OTHERS:
        fs = [f for f in sorted((esc / lab).glob("*.wav")) if f.name not in exclude]
        fs = fs[:len(fs) // 2] if half == 0 else fs[len(fs) // 2:]
        items += [(lab, f) for f in fs[:8]]
    parts, truth, t, sr = [], [], 0.0, 44100
    for k in rng.permutation(len(items)):
        lab, f = items[k]
        x, sr = sf.read(f, dtype="float32")
        x = x if x.ndim == 1 else x.mean(axis=1)
        parts += [x, np.zeros(int(1.5 * sr), np.float32)]
        truth.append((lab, t, t + len(x) / sr))
        t += len(x) / sr + 1.5
    sf.write(path, np.concatenate(parts), sr)
    return truth, t


def listen(bundle: Path, wav: Path, db: Path, clips: bool):
    if db.exists():
        db.unlink()
    subprocess.run(CLI + ["listen", "--model", str(bundle), "--file", str(wav), "--db", str(db), "--no-windows"]
                   + (["--clips"] if clips else []), check=True, stdout=subprocess.DEVNULL)
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT id, label, start_s, end_s FROM events").fetchall()
    finally:
        conn.close()


def is_true(e, truth) -> bool:
    return any(lab == e[1] and a < e[3] and b > e[2] for lab, a, b in truth)


def score(events, truth, duration_s: float) -> dict:
    fa = sum(1 for e in events if not is_true(e, truth))
    tg = [(lab, a, b) for lab, a, b in truth if lab in TARGETS]
    hit = sum(1 for lab, a, b in tg if any(e[1] == lab and a < e[3] and b > e[2] for e in events))
    return {"events": len(events), "false_alarms": fa, "false_alarms_per_hour": round(fa / duration_s * 3600, 1),
            "recall": round(hit / len(tg), 3), "targets": len(tg)}


def main(argv=None) -> int:
    from runtime.store.reviews import Review, add_review
    from runtime.store.schema import connect

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--esc10", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data" / "esc10")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="fieldear-review-loop-"))
    data, cache = work / "data", work / "cache"
    exclude = set()
    for lab in TARGETS:
        (data / lab).mkdir(parents=True, exist_ok=True)
        for f in sorted((args.esc10 / lab).glob("*.wav"))[::5][:8]:
            (data / lab / f.name).write_bytes(f.read_bytes())
            exclude.add(f.name)
    model = work / "mine"
    subprocess.run(CLI + ["train", str(data), "--out", str(model), "--cache", str(cache), "--folds", "4", "--force"],
                   check=True)
    (work / "A").mkdir(exist_ok=True)
    truth_a, dur_a = make_stream(args.esc10, exclude, 0, work / "A" / "a.wav")
    truth_b, dur_b = make_stream(args.esc10, exclude, 1, work / "b.wav")
    db_a = work / "A" / "fieldear.db"
    events_a = listen(model, work / "A" / "a.wav", db_a, True)
    res = {"stream_A": score(events_a, truth_a, dur_a), "stream_A_min": round(dur_a / 60, 1),
           "stream_B_min": round(dur_b / 60, 1)}
    conn = connect(db_a)
    for e in events_a:
        add_review(conn, Review(e[0], "confirm" if is_true(e, truth_a) else "reject", "truth"))
    conn.close()
    t0 = time.monotonic()
    subprocess.run(CLI + ["train", "--update", str(model), "--reviews", str(db_a), "--out", str(work / "new"),
                          "--force", "--cache", str(cache)], check=True)
    res["update_s"] = round(time.monotonic() - t0, 1)
    rep = json.loads((work / "new" / "report.json").read_text())["update"]["reviews"]
    res["reviews"] = {k: rep[k] for k in ("by_action_label", "held_out", "held_out_comparison")}
    for name, bundle in (("before", model), ("after", work / "new")):
        res[f"stream_B_{name}"] = score(listen(bundle, work / "b.wav", work / f"b_{name}.db", False), truth_b, dur_b)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
