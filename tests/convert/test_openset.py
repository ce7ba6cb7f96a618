"""Open-set pieces on real embeddings (the built-in negative set): the label-like filter, validation streams,
the calibration search's shortcut and budget rule, the novelty rule and its place in the bundle."""

from __future__ import annotations

import numpy as np
import pytest

from convert.data.negatives import load_negatives
from convert.openset import calibrate
from convert.openset.pool import build_pool
from convert.openset.streams import compose_stream
from runtime.detect.events import PostSettings, detect
from runtime.errors import BundleError
from runtime.model.bundle import load_bundle, sha256_file, write_bundle
from runtime.model.novelty import Novelty, load_novelty, unit_rows
from runtime.paths import BACKBONE_FILE, DEFAULT_BUNDLE


@pytest.fixture(scope="module")
def negatives():
    return load_negatives(sha256_file(BACKBONE_FILE))


def _items(neg, category, folds=None, loud=False):
    rows = [i for i, r in enumerate(neg.items) if r["category"] == category and (folds is None or r["fold"] in folds)]
    blocks = [neg.item_blocks(i) for i in rows]
    if loud:  # as train passes them: blocks less than 20 dB below the clip's loudest
        blocks = [b[lv >= lv.max() - 20] for b, lv in zip(blocks, (neg.levels[neg.item == i] for i in rows))]
    return rows, blocks


def test_negatives_like_a_label_are_dropped_and_unrelated_ones_kept(negatives):
    # the user's "dog" and "rain" clips: built-in items of folds 1-2 (their exact copies are dropped by sha256)
    dog_rows, dog = _items(negatives, "dog", {"1", "2"}, loud=True)
    rain_rows, rain = _items(negatives, "rain", {"1", "2"}, loud=True)
    shas = {negatives.items[i]["sha256"] for i in dog_rows + rain_rows}
    pool = build_pool(negatives, [], dog + rain, np.array([0] * len(dog) + [1] * len(rain)), shas, ["dog", "rain"], 5)
    dropped = pool.notes["builtin_dropped"]
    assert dropped["a training clip"]["n"] == len(shas)

    def kept(category):
        return len({i for i, c in zip(pool.item, pool.category) if c == category})

    # other dogs and rain (folds 3-4) sound like the user's: most are not trained as background
    others = sum(1 for r in negatives.items if r["category"] == "dog" and r["fold"] in ("3", "4"))
    assert kept("dog") <= 0.4 * others and kept("rain") <= 0.4 * others
    # speech, forest ambience and unrelated sounds stay
    assert kept("speech") >= 0.95 * sum(1 for r in negatives.items if r["category"] == "speech")
    assert kept("ambient") == 48 and kept("chainsaw") == 32 and kept("clock_tick") == 32
    # every item stays in one fold; beds and events both present in every fold
    for k in range(5):
        assert pool.items(k, "bed") and pool.items(k, "event")
    assert len(pool.training(0)) + int((pool.fold == 0).sum()) == len(pool)


def test_validation_stream_places_items_between_background_runs(negatives):
    rng = np.random.default_rng(3)
    _, dogs = _items(negatives, "dog", {"1"})
    _, speech = _items(negatives, "speech")
    beds = [negatives.item_blocks(i) for i, r in enumerate(negatives.items) if r["kind"] == "bed"][:5]
    targets = [("dog", e, np.arange(len(e)) >= 1) for e in dogs[:6]]
    stream = compose_stream(0, targets, [("speech", e) for e in speech[:4]], beds, rng)
    assert [p.kind for p in stream.items].count("target") == 6 and len(stream.items) == 10
    prev_end = 0
    for p in sorted(stream.items, key=lambda p: p.first):
        gap = p.first - prev_end
        assert 2 <= gap <= 6  # background between items
        prev_end = p.first + p.n
        if p.kind == "target":
            assert p.loud == (p.first + 1, p.first + p.n)
    assert stream.n_blocks - prev_end >= 2
    again = compose_stream(0, targets, [("speech", e) for e in speech[:4]], beds, np.random.default_rng(3))
    assert np.array_equal(again.emb, stream.emb)  # seeded


def test_feeding_only_blocks_above_the_off_threshold_gives_the_detectors_events():
    rng = np.random.default_rng(0)
    n = 600
    x = np.clip(np.convolve(rng.random(n) ** 4, np.ones(3) / 3, mode="same") * 1.6, 0, 1)
    tl = calibrate.Timeline(x[:, None], np.ones((n, 1)), [], [], 1.161, 2.322)
    for smoothing in (1, 3):
        seq = calibrate.smoothed(tl, x[:, None], smoothing)
        for thr, gap, dur in ((0.5, 0.0, 0.0), (0.3, 1.161, 2.322), (0.7, 1.161, 0.0)):
            fast = calibrate.label_events("a", seq, PostSettings(thresholds={"a": thr}, merge_gap_s=gap,
                                                                  min_event_s=dur), tl.hop_s)
            full = detect(["a"], PostSettings(thresholds={"a": thr}, smoothing=smoothing, merge_gap_s=gap,
                                              min_event_s=dur), tl.hop_s, [(*tl.times(k), x[k:k + 1]) for k in range(n)])
            assert [(e.start_s, e.end_s) for e in fast] == [(e.start_s, e.end_s) for e in full]
            assert fast  # the case is not empty
            # one run without gap and minimum serves them all
            plain = calibrate.label_events("a", seq, PostSettings(thresholds={"a": thr}), tl.hop_s)
            assert calibrate.merged(plain, gap, dur) == [(e.start_s, e.end_s) for e in full]


def test_thresholds_are_raised_until_the_false_alarms_fit():
    # per label: (tp, fp, fn) at rising thresholds
    a = [(10, 8, 0), (10, 4, 0), (9, 1, 1), (5, 0, 5)]
    b = [(10, 6, 0), (9, 2, 1), (8, 0, 2), (4, 0, 6)]
    assert calibrate.fit_budget([a, b], budget_fp=3) == ([2, 2], True)  # each label's best fits already
    assert calibrate.fit_budget([a, b], budget_fp=0) == ([3, 2], True)  # a's last false alarm goes
    c = [(9, 1, 1), (9, 1, 1), (9, 0, 1)]  # F1 0.9, 0.9, 0.947
    assert calibrate.most_sensitive_best(c) == 2
    d = [(9, 2, 1), (9, 1, 1), (9, 1, 1)]  # 0.857, 0.9, 0.9: of equal ones the lowest threshold
    assert calibrate.most_sensitive_best(d) == 1
    pick, fits = calibrate.fit_budget([[(1, 5, 0)]], budget_fp=1)
    assert not fits and pick == [0]


def test_novelty_rule_zeroes_labels_a_block_is_unlike(negatives):
    _, dogs = _items(negatives, "dog", {"1"})
    _, speech = _items(negatives, "speech")
    protos = np.concatenate(dogs[:5])
    nov = Novelty(unit_rows(protos), np.zeros(len(protos), dtype=np.int64), np.array([0.9, -1.0], dtype=np.float32))
    sim_dog = nov.similarity(np.concatenate(dogs[5:10]))[:, 0]
    sim_speech = nov.similarity(np.concatenate(speech[:20]))[:, 0]
    assert np.median(sim_dog) > np.median(sim_speech)
    scores = np.full((3, 2), 0.8, dtype=np.float32)
    gated = nov.gate(scores, np.array([[0.95, -1.0], [0.5, -1.0], [0.9, 0.2]]))
    assert (gated > 0).tolist() == [[True, True], [False, True], [True, True]]  # tau -1: never cut
    assert np.allclose(nov.similarity(protos[:3])[:, 0], 1.0, atol=1e-5)


def _bundle_with(tmp_path, edit, files_extra=None):
    src = load_bundle(DEFAULT_BUNDLE)
    meta = {k: v for k, v in src.meta.items() if k not in ("json_sha256", "files")}
    files = {p.name: p for p in DEFAULT_BUNDLE.iterdir() if p.is_file() and p.name != "model.json"}
    files.update(files_extra or {})
    edit(meta)
    out = tmp_path / "b"
    write_bundle(out, files, meta, force=True)
    return out


def test_bundle_carries_stream_defaults_and_a_checked_novelty_file(tmp_path, negatives):
    import io

    labels = load_bundle(DEFAULT_BUNDLE).labels
    _, dogs = _items(negatives, "dog", {"1"})
    buf = io.BytesIO()
    np.savez(buf, prototypes=np.concatenate(dogs[:3]).astype(np.float16), proto_label=np.zeros(9, dtype=np.int16))

    def edit(meta):
        meta["stream"] = {"thresholds": {label: 0.6 for label in labels}, "smoothing": 2, "merge_gap_s": 1.0}
        meta["novelty"] = {"file": "novelty.npz", "tau": {label: 0.5 for label in labels}}

    out = _bundle_with(tmp_path, edit, {"novelty.npz": buf.getvalue()})
    bundle = load_bundle(out)
    assert bundle.stream["smoothing"] == 2 and bundle.stream["thresholds"][labels[0]] == 0.6
    s = PostSettings.for_bundle(bundle)
    assert s.smoothing == 2 and s.merge_gap_s == 1.0 and s.on_threshold(labels[1]) == 0.6
    nov = load_novelty(out / "novelty.npz", bundle.novelty["tau"], bundle.labels)
    assert nov.prototypes.shape == (9, 512)
    from runtime.model.model import Model

    model = Model(bundle)
    raw, gated = model.score_block_both(np.zeros((bundle.frontend.block_frames, bundle.frontend.n_mels), np.float32))
    assert gated.shape == raw.shape and (gated <= raw + 1e-6).all()
    # a replaced novelty file is refused like a replaced model file
    (out / "novelty.npz").write_bytes(buf.getvalue() + b"x")
    with pytest.raises(BundleError, match="novelty.npz checksum mismatch"):
        load_bundle(out)


def test_malformed_stream_section_is_refused(tmp_path):
    labels = load_bundle(DEFAULT_BUNDLE).labels
    for stream in ({"thresholds": {labels[0]: 2.0}}, {"thresholds": {label: 0.5 for label in labels}, "smoothing": -1}):
        # write_bundle checks what it publishes with load_bundle: such a bundle is never written
        with pytest.raises(BundleError, match="'stream' is malformed"):
            _bundle_with(tmp_path, lambda m, s=stream: m.update(stream=s))
        assert not (tmp_path / "b").exists()


def test_a_rejected_event_trains_only_its_blocks_unlike_another_label(negatives):
    # the user's dogs and rain (folds 1-2). Rejected "rain" events: rain from fold 3 (every block stays: like its
    # own label or like none), a dog from fold 3 (its dog-like blocks are left out: a reject says "not rain", not
    # "nothing"); the same dog relabelled to background stays whole
    from types import SimpleNamespace

    from convert.openset.pool import label_like, label_similarity_floor

    _, dog = _items(negatives, "dog", {"1", "2"}, loud=True)
    _, rain = _items(negatives, "rain", {"1", "2"}, loud=True)
    _, other_rain = _items(negatives, "rain", {"3"}, loud=True)
    _, other_dog = _items(negatives, "dog", {"3"}, loud=True)
    labels, pos_label = ["dog", "rain"], np.array([0] * len(dog) + [1] * len(rain))
    pos = [unit_rows(c) for c in dog + rain]
    floors = label_similarity_floor(pos, pos_label, len(labels))
    the_dog = max(other_dog, key=lambda e: int((label_like(e, pos, pos_label, floors) == 0).sum()))
    events = [SimpleNamespace(emb=other_rain[0], sha="a" * 64, category="review:rejected", not_label="rain"),
              SimpleNamespace(emb=the_dog, sha="b" * 64, category="review:rejected", not_label="rain"),
              SimpleNamespace(emb=the_dog, sha="c" * 64, category="review:rejected", not_label="")]
    pool = build_pool(None, [], dog + rain, pos_label, set(), labels, 4, events=events)
    kept = [int((pool.item == i).sum()) for i in np.unique(pool.item)]
    like = label_like(the_dog, pos, pos_label, floors)
    assert (like == 0).sum() > 0  # the premise: that dog sounds like the user's dogs
    expected = [len(other_rain[0]) - int((label_like(other_rain[0], pos, pos_label, floors) == 0).sum()),
                int((like != 0).sum()), len(the_dog)]
    assert kept == [n for n in expected if n]  # an event left with no block is no item
    assert pool.notes["hard_negative_blocks_like_another_label"] == len(other_rain[0]) + len(the_dog) - sum(expected[:2])


def test_update_thresholds_rise_above_the_old_only_on_enough_confirmed_reviews():
    labels = ["dog", "rain", "rooster"]
    old = {"dog": 0.6, "rain": 0.6, "rooster": 0.5}
    chosen = {"dog": 0.85, "rain": 0.4, "rooster": 0.9}
    peaks = ([(0, p) for p in (0.95, 0.9, 0.99, 0.88, 0.97)]  # dog: 5 confirmed, none lost at 0.85: too few
             + [(1, 0.1)]  # rain: the streams lowered it; lowering is never held back
             + [(2, 0.95)] * 19 + [(2, 0.75)])  # rooster: 20 confirmed: 0.7 loses none (bound 1/21), 0.8 one
    out, notes = calibrate.keep_review_recall(chosen, old, labels, peaks)
    assert out == {"dog": 0.6, "rain": 0.4, "rooster": 0.7}
    assert notes["dog"]["loss_bound_at_streams"] == round(1 / 6, 3)
    assert notes["rooster"]["loss_bound_at_streams"] == round(2 / 21, 3)
    # no confirmed clip of a label: back to the old threshold
    out, _ = calibrate.keep_review_recall({"dog": 0.9}, {"dog": 0.6}, ["dog"], [])
    assert out == {"dog": 0.6}


def test_a_confirmed_clip_trains_only_the_events_own_blocks(tmp_path):
    # a saved clip: 1 s of the site before the event, the event (3 device blocks, 4.64 s), 1 s after. At the
    # device's hop from the clip's start every block of it overlaps the event, the first and the last partly the
    # pre- and post-roll; the event's own blocks are those lying inside its span (to half a dense hop)
    from types import SimpleNamespace

    from convert.openset.reviews import dense_params, event_span, span_blocks
    from runtime.audio.wav import write_wav
    from runtime.features.frontend import BACKBONE
    from runtime.features.pipeline import FileBlocks

    family = SimpleNamespace(params=BACKBONE)
    hop, block = BACKBONE.block_hop_seconds, BACKBONE.block_seconds
    event = 2 * hop + block
    clip = tmp_path / "clip.wav"
    write_wav(clip, np.zeros(int((event + 2.0) * BACKBONE.sample_rate), np.float32), BACKBONE.sample_rate)
    dense = np.zeros(sum(1 for _ in FileBlocks(clip, dense_params(BACKBONE))))
    row = {"start_s": 100.0, "end_s": 100.0 + event, "clip_start_s": 99.0}
    span = event_span(row, clip)
    assert span == pytest.approx((1.0, 1.0 + event))
    assert event_span({**row, "clip_start_s": None}, clip) == pytest.approx(span, abs=1e-3)  # an old log's clip
    assert event_span({**row, "clip_start_s": 99.5}, clip) == pytest.approx((0.5, 0.5 + event))
    every, own = span_blocks(dense, None, family), span_blocks(dense, span, family)
    assert list(every) == [0, 5, 10, 15]  # what a confirmed clip trained before: 4 blocks from the clip's start
    dense_hop = dense_params(BACKBONE).block_hop_seconds
    starts = own * dense_hop
    assert len(own) == 3 and np.all(np.diff(own) == 5)
    assert np.all(starts >= 1.0 - dense_hop / 2) and np.all(starts + block <= 1.0 + event + dense_hop / 2)
    assert abs(starts[0] - 1.0) <= dense_hop / 2  # the device's first block of the event, to half a dense hop
    assert list(span_blocks(dense, (3.0, 4.0), family)) == list(every)  # no block inside: all of them


def test_an_update_from_reviews_keeps_smoothing_and_merge_gap_at_the_old_bundles():
    # the validation streams re-choose them after the refit (they went from 3 blocks to 1 on a design recording);
    # the guard holds them at the old bundle's, as it holds the thresholds and the minimum event
    from types import SimpleNamespace

    from convert.openset.run import review_guard

    old = {"thresholds": {"dog": 0.6}, "min_event_s": 0.5, "smoothing": 3, "merge_gap_s": 1.16}
    family = SimpleNamespace(review_guard=SimpleNamespace(positives=[], old=old))
    chosen = {"thresholds": {"dog": 0.8}, "min_event_s": 0.9, "smoothing": 1, "merge_gap_s": 0.0}
    notes = review_guard(family, SimpleNamespace(labels=["dog"]), [], [], None, chosen)
    assert chosen == {"thresholds": {"dog": 0.6}, "min_event_s": 0.5, "smoothing": 3, "merge_gap_s": 1.16}
    assert notes["smoothing"] == {"from_streams": 1, "old": 3}
    assert notes["merge_gap_s"] == {"from_streams": 0.0, "old": 1.16}
    # an old bundle without them: the streams' choice stays
    chosen = {"thresholds": {"dog": 0.5}, "min_event_s": 0.0, "smoothing": 2, "merge_gap_s": 0.5}
    family.review_guard.old = {"thresholds": {"dog": 0.6}}
    review_guard(family, SimpleNamespace(labels=["dog"]), [], [], None, chosen)
    assert (chosen["smoothing"], chosen["merge_gap_s"]) == (2, 0.5)
    # no update from reviews: nothing changes
    chosen = {"thresholds": {"dog": 0.8}, "smoothing": 1}
    assert review_guard(SimpleNamespace(), None, [], [], None, chosen) is None and chosen["smoothing"] == 1


def test_an_update_trains_a_confirmed_clip_on_its_own_blocks_and_guards_on_all(monkeypatch):
    # train --update --reviews: a confirmed clip is added with the event's own blocks only (the ones partly in its
    # pre- and post-roll dropped); the recall guard still scores every dense block of it
    from types import SimpleNamespace

    import convert.openset.reviews as reviews
    from convert.openset.reviews import ReviewClip, ReviewSet, dense_params, span_blocks
    from convert.openset.update import UpdateData, add_reviews
    from runtime.features.frontend import BACKBONE

    family = SimpleNamespace(params=BACKBONE)
    event = 2 * BACKBONE.block_hop_seconds + BACKBONE.block_seconds
    span = (1.0, 1.0 + event)
    n_dense = int((event + 2.0 - BACKBONE.block_seconds) / dense_params(BACKBONE).block_hop_seconds) + 1
    dense = np.arange(n_dense, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    monkeypatch.setattr(reviews, "embed_reviews", lambda clips, fam: ([dense] * len(clips),
                                                                      [np.zeros(n_dense)] * len(clips)))
    clip = ReviewClip(path=None, sha="a" * 64, verdict="confirm", label="dog", event_label="dog", db="x",
                      event_id=1, span_s=span)
    cache = UpdateData(copies=[[], []], levels=[[], []], y=np.zeros(0, np.int64), fold=np.zeros(0, np.int64), sha=[],
                       file_sha=[], fold_name=[], mixed_copy=-1, mixed_lead=[], background=[], review=[],
                       hard_negatives=[])
    hard, positives = add_reviews(cache, ReviewSet(train=[clip]), family, ["dog"], 4)
    own, every = span_blocks(dense, span, family), span_blocks(dense, None, family)
    assert len(own) == 3 and len(every) == 4
    for copy in cache.copies:  # the same blocks in every training copy
        assert list(copy[0][:, 0]) == list(own)
    assert cache.review == [True] and list(cache.y) == [0] and not hard
    assert len(positives) == 1 and positives[0][0] == 0 and positives[0][2] is dense
