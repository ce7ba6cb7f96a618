"""The review loop end to end on ESC-10 streams, driven through the browser (issue 13's Must-show); shared by the
CI-sized test (tests/web/test_review_loop.py) and the full-size measurement (tests/bench/bench_review_loop.py).

A small bundle (dog, rooster, crying_baby: every 5th ESC-10 clip of each, ``train_clips`` of them; other
classes and seeds for design runs: ``Recording``) is trained
with the real CLI. Two streams are cut from the other clips: A from the first half of each class's remaining
clips, B from the second half (``stream_clips`` of each of the three labels and of seven other ESC-10 classes,
in random order, 1.5 s of silence apart), each with a truth CSV (label, start_s, end_s). One recording, two
halves: the model listens to A (`fieldear listen --file --clips`), headless Chromium opens the detections page
and clicks confirm on every detection that overlaps a clip of its label in the truth and reject on the rest;
`fieldear train --update --reviews` refits the head from the log; the old and the new bundle listen to B.

Scores on B: false alarms per hour (events overlapping no clip of their label) and recall (share of the target
clips with an event of their label). Nothing of B is seen before the final listen runs.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.web.browser import wait_for

TARGETS = ("dog", "rooster", "crying_baby")
OTHERS = ("chainsaw", "clock_tick", "crackling_fire", "helicopter", "rain", "sea_waves", "sneezing")
CLI = [sys.executable, "-m", "runtime.cli.main", "-q"]
GAP_S = 1.5


@dataclass(frozen=True)
class LoopSize:
    train_clips: int  # per label of the bundle: every 5th ESC-10 clip
    stream_clips: int  # per class in each half of the recording
    folds: int = 4


@dataclass(frozen=True)
class Recording:
    """Which ESC-10 classes are the bundle's labels and which the others, and the seed of the clips' order. The
    reported loop is ``REPORTED``; design recordings (tests/experiments/exp_review_design.py) use other targets
    and seeds, so choosing the update's rule on them is not choosing on the reported second half."""

    targets: tuple[str, ...] = TARGETS
    others: tuple[str, ...] = OTHERS
    seed: int = 0  # the halves' orders: default_rng(2 * seed + half)
    train_offset: int = 0  # the bundle trains on every 5th clip of each label from this index


REPORTED = Recording()


def train_bundle(esc10: Path, work: Path, size: LoopSize, rec: Recording = REPORTED) -> tuple[Path, set[str]]:
    """The small bundle (real `fieldear train`); returns (bundle, names of the clips it trained on)."""
    data, used = work / "data", set()
    for lab in rec.targets:
        (data / lab).mkdir(parents=True, exist_ok=True)
        for f in sorted((esc10 / lab).glob("*.wav"))[rec.train_offset::5][:size.train_clips]:
            (data / lab / f.name).write_bytes(f.read_bytes())
            used.add(f.name)
    bundle = work / "old"
    subprocess.run(CLI + ["train", str(data), "--out", str(bundle), "--cache", str(work / "cache"),
                          "--folds", str(size.folds), "--force"], check=True, stdout=subprocess.DEVNULL)
    return bundle, used


def make_stream(esc10: Path, exclude: set[str], half: int, n_per_class: int, path: Path,
                rec: Recording = REPORTED) -> tuple[list, float]:
    """Half ``half`` (0: A, 1: B) of the recording: WAV at ``path`` and its truth CSV beside it (``.csv``);
    returns (truth [(label, start_s, end_s)], duration_s)."""
    import soundfile as sf

    rng = np.random.default_rng(2 * rec.seed + half)
    items = []
    for lab in rec.targets + rec.others:
        fs = [f for f in sorted((esc10 / lab).glob("*.wav")) if f.name not in exclude]
        fs = fs[:len(fs) // 2] if half == 0 else fs[len(fs) // 2:]
        items += [(lab, f) for f in fs[:n_per_class]]
    parts, truth, t, sr = [], [], 0.0, None
    for k in rng.permutation(len(items)):
        lab, f = items[k]
        x, rate = sf.read(f, dtype="float32")
        if sr is not None and rate != sr:
            raise ValueError(f"{f}: {rate} Hz, the stream is {sr} Hz")
        sr = rate
        x = x if x.ndim == 1 else x.mean(axis=1)
        parts += [x, np.zeros(int(GAP_S * sr), np.float32)]
        truth.append((lab, t, t + len(x) / sr))
        t += len(x) / sr + GAP_S
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.concatenate(parts), sr)
    with open(path.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "start_s", "end_s"])
        w.writerows((lab, f"{a:.3f}", f"{b:.3f}") for lab, a, b in truth)
    return truth, t


def read_truth(csv_path: Path) -> list[tuple[str, float, float]]:
    with open(csv_path, newline="") as fh:
        return [(r["label"], float(r["start_s"]), float(r["end_s"])) for r in csv.DictReader(fh)]


def listen(bundle: Path, wav: Path, db: Path, clips: bool) -> list[tuple]:
    """A real `fieldear listen --file`; its events (id, label, start_s, end_s). With ``clips`` (the log to
    review) as a device logs: clips and block scores (the page's score plots); else events only."""
    if db.exists():
        db.unlink()
    subprocess.run(CLI + ["listen", "--model", str(bundle), "--file", str(wav), "--db", str(db)]
                   + (["--clips"] if clips else ["--no-windows"]), check=True, stdout=subprocess.DEVNULL)
    return events_of(db)


def events_of(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT id, label, start_s, end_s FROM events ORDER BY id").fetchall()
    finally:
        conn.close()


def is_true(event, truth) -> bool:
    """The event overlaps a clip of its label."""
    return any(lab == event[1] and a < event[3] and b > event[2] for lab, a, b in truth)


def score(events, truth, duration_s: float, targets: tuple[str, ...] = TARGETS) -> dict:
    fa = sum(1 for e in events if not is_true(e, truth))
    targets = [(lab, a, b) for lab, a, b in truth if lab in targets]
    hit = sum(1 for lab, a, b in targets if any(e[1] == lab and a < e[3] and b > e[2] for e in events))
    return {"events": len(events), "false_alarms": fa, "false_alarms_per_hour": round(fa / duration_s * 3600, 1),
            "detected": hit, "targets": len(targets), "recall": round(hit / len(targets), 3),
            "minutes": round(duration_s / 60, 1)}


def page_timing(driver) -> dict:
    """The browser's Navigation Timing of the page just loaded (ms): request to last byte, to DOM ready, to load."""
    t = driver.execute_script("const n = performance.getEntriesByType('navigation')[0];"
                              "return [n.requestStart, n.responseEnd, n.domContentLoadedEventEnd, n.loadEventEnd];")
    return {"response_ms": round(t[1] - t[0], 1), "dom_ready_ms": round(t[2], 1), "load_ms": round(t[3], 1)}


def review_in_browser(driver, url: str, db: Path, truth, screenshot: Path | None = None) -> dict:
    """Open the detections page and click confirm (true by ``truth``) or reject on every row, waiting for each
    verdict to be shown (saved). Returns counts, page timings and click-to-saved times; the page reloaded with
    every verdict is screenshotted to ``screenshot``."""
    from selenium.webdriver.common.by import By

    events = {e[0]: e for e in events_of(db)}
    driver.get(url + "/detections?limit=500")
    timings = {"detections_before": page_timing(driver)}
    rows = driver.find_elements(By.CSS_SELECTOR, "tr.event")
    clicks, verdicts = [], {}
    for row in rows:
        event_id = int(row.get_attribute("data-id"))
        action = "confirm" if is_true(events[event_id], truth) else "reject"
        t = time.perf_counter()
        row.find_element(By.CSS_SELECTOR, f'button[data-action="{action}"]').click()
        wait_for(lambda: row.find_element(By.CSS_SELECTOR, ".verdict").text.startswith(action + " "),
                 timeout=15, what=f"{action} of event {event_id} saved")
        clicks.append((time.perf_counter() - t) * 1000)
        verdicts[event_id] = action
    driver.get(url + "/detections?limit=500")
    timings["detections_after"] = page_timing(driver)
    wait_for(lambda: driver.execute_script(
        "return Array.from(document.querySelectorAll('img.spec')).every(i => i.complete && i.naturalWidth > 0)"),
        timeout=60, what="spectrogram images")
    timings["detections_after_with_images_ms"] = round(driver.execute_script("return performance.now()"), 1)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1400, min(max(1000, int(height) + 40), 12000))
        driver.save_screenshot(str(screenshot))
        driver.set_window_size(1400, 1000)
    return {"rows": len(rows), "events_in_log": len(events), "verdicts": verdicts,
            "confirmed": sum(v == "confirm" for v in verdicts.values()),
            "rejected": sum(v == "reject" for v in verdicts.values()),
            "page_timings": timings, "click_to_saved_ms_median": round(statistics.median(clicks), 1) if clicks else None,
            "click_to_saved_ms_max": round(max(clicks), 1) if clicks else None}


def stored_verdicts(db: Path) -> dict[int, str]:
    """The latest verdict per event in the log's reviews table."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT event_id, verdict FROM reviews ORDER BY id").fetchall()
    finally:
        conn.close()
    return {int(e): v for e, v in rows}


def review_in_store(db: Path, truth, reviewer: str = "design") -> dict:
    """Without a browser: the same verdicts (confirm if true by ``truth``, else reject) written by the code the
    page's POST /api/events/<id>/review runs (runtime.store.reviews.add_review). For design runs."""
    from runtime.store.reviews import Review, add_review
    from runtime.store.schema import connect

    verdicts = {e[0]: "confirm" if is_true(e, truth) else "reject" for e in events_of(db)}
    conn = connect(db, timeout=10)
    try:
        for event_id, action in verdicts.items():
            add_review(conn, Review(event_id, action, reviewer))
    finally:
        conn.close()
    return {"confirmed": sum(v == "confirm" for v in verdicts.values()),
            "rejected": sum(v == "reject" for v in verdicts.values())}


def update(bundle: Path, db: Path, out: Path, cache: Path, cli: list[str] = CLI) -> dict:
    """`fieldear train --update BUNDLE --reviews DB` (``cli``: the command that runs fieldear); (seconds, the
    report's reviews section)."""
    t0 = time.monotonic()
    subprocess.run(cli + ["train", "--update", str(bundle), "--reviews", str(db), "--out", str(out), "--force",
                          "--cache", str(cache)], check=True, stdout=subprocess.DEVNULL)
    seconds = round(time.monotonic() - t0, 1)
    report = json.loads((out / "report.json").read_text())
    rep = report["update"]["reviews"]
    stream = json.loads((out / "model.json").read_text())["stream"]
    old_stream = json.loads((bundle / "model.json").read_text())["stream"]
    return {"update_s": seconds,
            "reviews": {k: rep.get(k) for k in ("by_action_label", "held_out", "trained", "held_out_comparison")},
            "stream_settings": {"before": old_stream, "after": stream}}


@dataclass
class FirstHalf:
    """The loop up to the reviews: the old bundle, its reviewed log of the first half, the second half's truth."""

    bundle: Path
    db: Path
    truth_b: list
    duration_b: float
    result: dict


def first_half(esc10: Path, work: Path, size: LoopSize, review, rec: Recording = REPORTED) -> FirstHalf:
    """Train the bundle, cut both halves, listen to the first and ``review(db, truth)`` it."""
    work.mkdir(parents=True, exist_ok=True)
    bundle, used = train_bundle(esc10, work, size, rec)
    _, dur_a = make_stream(esc10, used, 0, size.stream_clips, work / "A" / "first_half.wav", rec)
    truth_b, dur_b = make_stream(esc10, used, 1, size.stream_clips, work / "second_half.wav", rec)
    db_a = work / "A" / "fieldear.db"
    events_a = listen(bundle, work / "A" / "first_half.wav", db_a, clips=True)
    truth_a = read_truth(work / "A" / "first_half.csv")
    result = {"size": size.__dict__, "recording": rec.__dict__,
              "first_half": score(events_a, truth_a, dur_a, rec.targets)}
    result["browser_review"] = review(db_a, truth_a)
    return FirstHalf(bundle, db_a, truth_b, dur_b, result)


def second_half(work: Path, fh: FirstHalf, new: Path, name: str, targets: tuple[str, ...] = TARGETS) -> dict:
    """Bundle ``new`` listens to the second half; its score."""
    events = listen(new, work / "second_half.wav", work / f"second_half_{name}.db", clips=False)
    return score(events, fh.truth_b, fh.duration_b, targets)


def compare(before: dict, after: dict) -> dict:
    """The issue's two numbers: false alarms per hour after / before, recall change in points."""
    return {"false_alarms_per_hour_ratio": (round(after["false_alarms_per_hour"] / before["false_alarms_per_hour"], 3)
                                            if before["false_alarms_per_hour"] else None),
            "recall_change_points": round(100 * (after["recall"] - before["recall"]), 1)}


def run_loop(esc10: Path, work: Path, size: LoopSize, review, rec: Recording = REPORTED) -> dict:
    """The whole loop; ``review(db, truth)`` does the browser part (and returns what it measured)."""
    fh = first_half(esc10, work, size, review, rec)
    result = fh.result
    result.update(update(fh.bundle, fh.db, work / "new", work / "cache"))
    for name, b in (("before", fh.bundle), ("after", work / "new")):
        result[f"second_half_{name}"] = second_half(work, fh, b, name, rec.targets)
    result.update(compare(result["second_half_before"], result["second_half_after"]))
    return result
