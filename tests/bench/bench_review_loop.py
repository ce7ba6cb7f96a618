"""Review-loop bench (issue 13's Must-show): the loop of tests/web/review_loop.py at full size, reviewed through
the real `fieldear serve` in headless Chromium, then that same server measured by tests/bench/bench_web.py.

- A small bundle (8 ESC-10 clips of dog, rooster, crying_baby) listens to the first half of a recording (16
  clips of each of the three labels and of seven other ESC-10 classes); every detection is confirmed or
  rejected on the detections page from the truth CSV; `train --update --reviews`; the old and the new bundle
  listen to the second half (16 other clips of each class). ``second_half_before/after``: false alarms per hour
  and recall; the issue's target: false alarms at least halved at recall at most 5 points lower.
- ``browser_review``: Navigation Timing of the detections page (all rows) before and after the reviews, the
  click-to-saved time of the review buttons; ``server``: bench_web's page timings from outside and the server's
  idle CPU and RSS after the reviews (``measure_server``).
- Screenshot of the detections page with every verdict: ``<out>/screenshots/loop-detections-reviewed.png``.

Run: ``python -m tests.bench.bench_review_loop [--out bench/results] [--work DIR]``; writes ``review_loop.json``.
Needs the train and web extras, Chromium and ../shared/data/esc10.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from tests.bench.bench_web import measure_server, served
from tests.web.review_loop import LoopSize, review_in_browser, run_loop, stored_verdicts

ROOT = Path(__file__).resolve().parents[2]
ESC10 = Path(os.environ.get("FIELDEAR_SHARED", ROOT.parent / "shared" / "data")) / "esc10"
FULL_SIZE = LoopSize(train_clips=8, stream_clips=16)

log = logging.getLogger("bench_review_loop")


def main(out_dir, work: Path | None = None, idle_s: float = 30.0, size: LoopSize = FULL_SIZE) -> dict:
    from tests.web.browser import chromium_driver

    out = Path(out_dir)
    work = Path(work) if work else out / "review_loop_work"
    driver = chromium_driver()
    server = {}

    def review(db, truth):
        with served(db) as (proc, base):
            done = review_in_browser(driver, base, db, truth, out / "screenshots" / "loop-detections-reviewed.png")
            stored = stored_verdicts(db)
            if stored != done["verdicts"]:
                raise RuntimeError(f"the reviews table does not hold the clicked verdicts: {stored} vs {done['verdicts']}")
            server.update(measure_server(proc, base, idle_s=idle_s))
        done.pop("verdicts")
        return done

    try:
        result = run_loop(ESC10, work, size, review)
    finally:
        driver.quit()
    result["server"] = server
    before, after = result["second_half_before"], result["second_half_after"]
    result["meets_target"] = {"false_alarms_at_least_halved": after["false_alarms_per_hour"]
                              <= before["false_alarms_per_hour"] / 2,
                              "recall_at_most_5_points_lower": after["recall"] >= before["recall"] - 0.05 - 1e-9}
    out.mkdir(parents=True, exist_ok=True)
    (out / "review_loop.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--idle-s", type=float, default=30.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    print(json.dumps(main(args.out, args.work, args.idle_s), indent=2))
