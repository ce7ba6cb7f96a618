"""Post-processing: thresholds, smoothing, hysteresis, minimum duration, merge gap (pure functions)."""

import numpy as np
import pytest

from runtime.detect.events import (
    EventDetector,
    MovingAverage,
    PostSettings,
    detect,
    segment_of,
)
from runtime.detect.thresholds import LEGACY_STREAM_FLOOR as STREAM_THRESHOLD_FLOOR
from runtime.errors import ConfigError

pytestmark = pytest.mark.runtime

LABELS = ["dog", "rooster"]


def run(scores_dog, settings, hop=1.0, length=2.0, rooster=None):
    rooster = rooster if rooster is not None else [0.0] * len(scores_dog)
    blocks = [(i * hop, i * hop + length, [d, r]) for i, (d, r) in enumerate(zip(scores_dog, rooster))]
    return detect(LABELS, settings, hop, blocks)


def test_segment_is_central_hop_of_block():
    assert segment_of(10.0, 12.0, 1.0) == (10.5, 11.5)
    assert segment_of(0.0, 1.0, 2.0) == (0.0, 1.0)


def test_threshold_per_label_and_event_times_peak_mean():
    s = PostSettings(thresholds={"dog": 0.5, "rooster": 0.9}, hysteresis=0.0)
    ev = run([0.1, 0.6, 0.8, 0.7, 0.2], s, rooster=[0.1, 0.8, 0.8, 0.1, 0.1])
    assert [(e.label, e.start_s, e.end_s) for e in ev] == [("dog", 1.5, 4.5)]  # rooster 0.8 < 0.9
    assert ev[0].peak == pytest.approx(0.8)
    assert ev[0].mean == pytest.approx(0.7)
    assert ev[0].n_blocks == 3


def test_hysteresis_keeps_event_open_between_on_and_off():
    seq = [0.0, 0.6, 0.45, 0.45, 0.3, 0.0]
    with_h = run(seq, PostSettings(thresholds={"dog": 0.5}, hysteresis=0.1))
    without = run(seq, PostSettings(thresholds={"dog": 0.5}, hysteresis=0.0))
    assert [(e.start_s, e.end_s) for e in with_h] == [(1.5, 4.5)]
    assert [(e.start_s, e.end_s) for e in without] == [(1.5, 2.5)]


def test_smoothing_suppresses_single_block_spike_and_keeps_times_centred():
    spike = [0, 0, 0.9, 0, 0, 0]
    assert run(spike, PostSettings(thresholds={"dog": 0.5}, smoothing=3)) == []
    assert len(run(spike, PostSettings(thresholds={"dog": 0.5}, smoothing=1))) == 1
    plateau = [0, 0, 0.9, 0.9, 0.9, 0.9, 0, 0, 0]
    ev = run(plateau, PostSettings(thresholds={"dog": 0.5}, smoothing=3, hysteresis=0.0))
    # window mean attributed to the middle block: edges 0.6 at blocks 2 and 5 -> same extent as unsmoothed
    assert [(e.start_s, e.end_s) for e in ev] == [(2.5, 6.5)]


def test_min_duration_and_merge_gap():
    seq = [0, 0.9, 0, 0, 0.9, 0.9, 0, 0, 0, 0, 0.9, 0]
    base = dict(thresholds={"dog": 0.5}, hysteresis=0.0)
    assert len(run(seq, PostSettings(**base))) == 3
    merged = run(seq, PostSettings(**base, merge_gap_s=2.0))
    assert [(e.start_s, e.end_s) for e in merged] == [(1.5, 6.5), (10.5, 11.5)]
    long_only = run(seq, PostSettings(**base, min_event_s=1.5))
    assert [(e.start_s, e.end_s) for e in long_only] == [(4.5, 6.5)]


def test_open_event_is_closed_at_end_of_stream():
    ev = run([0, 0.9, 0.9, 0.9], PostSettings(thresholds={"dog": 0.5}))
    assert [(e.start_s, e.end_s) for e in ev] == [(1.5, 4.5)]


def test_incremental_equals_batch():
    rng = np.random.default_rng(3)
    scores = rng.random((200, 2))
    s = PostSettings(thresholds={"dog": 0.6, "rooster": 0.7}, smoothing=5, merge_gap_s=1.5, min_event_s=2.0)
    batch = detect(LABELS, s, 1.0, [(i, i + 2.0, sc) for i, sc in enumerate(scores)])
    det = EventDetector(LABELS, s, 1.0)
    inc = []
    for i, sc in enumerate(scores):
        inc += det.push(i, i + 2.0, sc)
    inc += det.close()
    key = lambda e: (e.start_s, e.label)  # noqa: E731
    assert sorted(inc, key=key) == sorted(batch, key=key)
    assert len(batch) > 3


def test_moving_average_values():
    ma = MovingAverage(3)
    out = []
    for i, v in enumerate([3.0, 6.0, 9.0, 12.0]):
        out += ma.push(i, np.array([v]))
    out += ma.flush()
    assert [p for p, _ in out] == [0, 1, 2, 3]
    assert [float(v[0]) for _, v in out] == [4.5, 6.0, 9.0, 10.5]


def test_ignore_labels_and_bundle_threshold_overrides():
    bundle = type("B", (), {"labels": LABELS, "thresholds": {"dog": 0.3, "rooster": 0.4}, "stream": {}})()
    s = PostSettings.for_bundle(bundle, {"rooster": 0.8}, ignore=("dog",))
    # a bundle without stream calibration: its clip thresholds are floored for streams, the user's own are taken as given
    assert s.on_threshold("dog") == STREAM_THRESHOLD_FLOOR and s.on_threshold("rooster") == 0.8
    assert PostSettings.for_bundle(bundle, {"rooster": 0.2}).on_threshold("rooster") == 0.2
    high = type("B", (), {"labels": LABELS, "thresholds": {"dog": 0.7}, "stream": {}})()
    assert PostSettings.for_bundle(high).on_threshold("dog") == 0.7
    assert run([0.9] * 4, s, rooster=[0.5] * 4) == []
    with pytest.raises(ConfigError, match="unknown label 'cat'"):
        PostSettings.for_bundle(bundle, {"cat": 0.5})


def test_stream_calibrated_bundle_gives_thresholds_and_settings_the_user_can_override():
    stream = {"thresholds": {"dog": 0.35, "rooster": 0.9}, "smoothing": 3, "min_event_s": 1.2, "merge_gap_s": 2.0}
    bundle = type("B", (), {"labels": LABELS, "thresholds": {"dog": 0.3, "rooster": 0.4}, "stream": stream})()
    s = PostSettings.for_bundle(bundle)
    # no floor: the calibrated thresholds are taken as they are, and so are the chosen settings
    assert (s.on_threshold("dog"), s.on_threshold("rooster")) == (0.35, 0.9)
    assert (s.smoothing, s.min_event_s, s.merge_gap_s, s.hysteresis) == (3, 1.2, 2.0, 0.1)
    mine = PostSettings.for_bundle(bundle, {"dog": 0.6}, smoothing=1, merge_gap_s=None)
    assert (mine.on_threshold("dog"), mine.smoothing, mine.merge_gap_s) == (0.6, 1, 2.0)
    with pytest.raises(ConfigError, match="smoothing"):
        PostSettings(smoothing=0)
