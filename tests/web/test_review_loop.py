"""The review loop end to end, CI-sized (issue 13's Must-show; tests/web/review_loop.py): a small bundle listens
to the first half of an ESC-10 recording, headless Chromium confirms or rejects every detection on the
detections page from the truth file, `train --update --reviews` refits the head, and the old and the new bundle
listen to the second half. The full-size numbers: tests/bench/bench_review_loop.py (docs/web.md).

What is asserted is the direction, with margins from the stream's size, not from a run: the first half must
hold false alarms (else there is nothing to learn from); every detection gets the verdict clicked and the
reviews table holds exactly those; on the second half the new bundle makes fewer false alarms than the old
one (not "halved": a CI-sized half has a handful, and one more or less is a third of them), and its recall is
at most max(5 points (the issue's bound), one target) lower (30 targets here: 5 points).
"""

from __future__ import annotations

import json

import pytest

from tests.web.browser import ServedApp, chromium_driver, require_chromium, screenshot_dir
from tests.web.review_loop import LoopSize, review_in_browser, run_loop, stored_verdicts

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.train]

CI_SIZE = LoopSize(train_clips=8, stream_clips=10)


def test_review_loop_in_the_browser(esc10, tmp_path):
    require_chromium()
    pytest.importorskip("flask")
    pytest.importorskip("tensorflow")
    from runtime.web.app import create_app
    from runtime.web.settings import WebSettings

    driver = chromium_driver()
    reviewed = {}

    def review(db, truth):
        with ServedApp(create_app(WebSettings(db=db), status_state=None)) as served:
            reviewed.update(review_in_browser(driver, served.url, db, truth,
                                              screenshot_dir() / "loop-detections-reviewed.png"))
        reviewed["stored"] = stored_verdicts(db)
        return {k: v for k, v in reviewed.items() if k not in ("verdicts", "stored")}

    try:
        result = run_loop(esc10, tmp_path / "loop", CI_SIZE, review)
    finally:
        driver.quit()
    (tmp_path / "loop.json").write_text(json.dumps(result, indent=1))
    first, before, after = result["first_half"], result["second_half_before"], result["second_half_after"]
    assert first["false_alarms"] > 0, first

    # every row reviewed through the page, and the log holds exactly the clicked verdicts
    assert reviewed["rows"] == reviewed["events_in_log"] == first["events"]
    assert reviewed["stored"] == reviewed["verdicts"]
    assert result["reviews"]["by_action_label"]["reject"] == {"background": first["false_alarms"]}

    assert after["false_alarms"] < before["false_alarms"], (before, after)
    allowed = max(0.05, 1 / before["targets"])
    assert after["recall"] >= before["recall"] - allowed - 1e-9, (before, after, allowed)
