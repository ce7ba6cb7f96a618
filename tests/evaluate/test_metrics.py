"""runtime.metrics: hand-computed cases (device tests) and agreement with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import FieldearError
from runtime.evaluate import metrics, plots

LABELS = ["a", "b", "c"]
Y_TRUE = ["a", "a", "a", "b", "b", "c"]
Y_PRED = ["a", "a", "b", "b", "zzz", "a"]  # "zzz" is not a label: counted as unknown


@pytest.mark.runtime
def test_report_hand_computed():
    r = metrics.classification_report(Y_TRUE, Y_PRED, LABELS)
    assert r["n"] == 6
    assert r["accuracy"] == pytest.approx(0.5)
    assert r["confusion"]["cols"] == ["a", "b", "c", "unknown"]
    assert r["confusion"]["matrix"] == [[2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0]]
    a, b, c = (r["per_label"][x] for x in LABELS)
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 3))
    assert (b["precision"], b["recall"], b["f1"], b["support"]) == pytest.approx((0.5, 0.5, 0.5, 2))
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 1)
    assert r["macro"]["f1"] == pytest.approx(7 / 18)
    assert r["weighted"]["f1"] == pytest.approx(0.5)
    assert r["weighted"]["recall"] == pytest.approx(0.5)


@pytest.mark.runtime
def test_unknown_column_only_when_used_and_bad_truth():
    r = metrics.classification_report(["a", "b"], ["a", "a"], ["a", "b"])
    assert r["confusion"]["cols"] == ["a", "b"]
    assert r["confusion"]["matrix"] == [[1, 0], [1, 0]]
    with pytest.raises(FieldearError, match="q"):
        metrics.classification_report(["a", "q"], ["a", "a"], ["a", "b"])
    with pytest.raises(ValueError):
        metrics.classification_report(["a"], ["a", "b"], ["a", "b"])


@pytest.mark.runtime
def test_text_rendering():
    r = metrics.classification_report(Y_TRUE, Y_PRED, LABELS)
    table = metrics.format_report_table(r, title="demo")
    assert "demo" in table and "accuracy" in table and "weighted avg" in table
    row_b = next(line for line in table.splitlines() if line.startswith("b "))
    assert row_b.split() == ["b", "0.500", "0.500", "0.500", "2"]
    conf = metrics.confusion_text(r).splitlines()
    assert conf[0].split()[-4:] == ["a", "b", "c", "unknown"]
    assert conf[2].split() == ["b", "0", "1", "0", "1"]
    # clashing 8-character prefixes: numbered columns with a legend
    long = ["crackling_a", "crackling_b"]
    r2 = metrics.classification_report(long, long, long)
    text = metrics.confusion_text(r2)
    assert "0=crackling_a" in text


@pytest.mark.runtime
def test_pr_curve_and_best_threshold_hand_computed():
    y = [1, 0, 1, 0]
    s = [0.9, 0.8, 0.4, 0.1]
    precision, recall, thresholds = metrics.precision_recall_curve(y, s)
    assert thresholds.tolist() == [0.1, 0.4, 0.8, 0.9]
    assert precision.tolist() == pytest.approx([0.5, 2 / 3, 0.5, 1.0, 1.0])
    assert recall.tolist() == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.0])
    threshold, f1 = metrics.best_f1_threshold(y, s)
    assert f1 == pytest.approx(0.8)
    assert threshold == pytest.approx(0.25)  # between 0.4 (kept) and 0.1 (rejected)
    # perfectly separable: the threshold sits in the gap, F1 1
    threshold, f1 = metrics.best_f1_threshold([1, 1, 0], [0.9, 0.7, 0.2])
    assert (threshold, f1) == pytest.approx((0.45, 1.0))
    assert metrics.best_f1_threshold([0, 0], [0.3, 0.6]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        metrics.precision_recall_curve([1, 0], [0.5, float("nan")])


@pytest.mark.runtime
def test_label_thresholds():
    scores = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    out = metrics.label_thresholds(["a", "a", "b", "c"], scores, LABELS)
    assert out["a"]["f1"] == 1.0 and 0.2 < out["a"]["threshold"] < 0.6
    assert out["c"]["positives"] == 1 and out["c"]["average_precision"] == 1.0
    with pytest.raises(ValueError):
        metrics.label_thresholds(["a"], scores, LABELS)


def test_matches_sklearn_random():
    from sklearn import (
        metrics as skm,  # not a runtime test: the train extra is installed
    )
    rng = np.random.default_rng(7)
    labels = [f"l{i}" for i in range(6)]
    for trial in range(25):
        n = int(rng.integers(1, 80))
        y_true = [labels[i] for i in rng.integers(0, 6, n)]
        # mostly right, some wrong, some outside the label set; some labels never predicted
        y_pred = [t if rng.random() < 0.6 else labels[int(rng.integers(0, 4))] for t in y_true]
        y_pred = [p if rng.random() > 0.05 else "other" for p in y_pred]
        r = metrics.classification_report(y_true, y_pred, labels)
        p, rc, f, sup = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        for i, label in enumerate(labels):
            row = r["per_label"][label]
            assert row["precision"] == pytest.approx(p[i])
            assert row["recall"] == pytest.approx(rc[i])
            assert row["f1"] == pytest.approx(f[i])
            assert row["support"] == sup[i]
        assert r["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
        for avg in ("macro", "weighted"):
            p, rc, f, _ = skm.precision_recall_fscore_support(
                y_true, y_pred, labels=labels, average=avg, zero_division=0
            )
            assert (r[avg]["precision"], r[avg]["recall"], r[avg]["f1"]) == pytest.approx((p, rc, f))
        ours = np.asarray(r["confusion"]["matrix"])[:, : len(labels)]
        assert (ours == skm.confusion_matrix(y_true, y_pred, labels=labels)).all()
        assert np.asarray(r["confusion"]["matrix"]).sum() == n


def test_pr_matches_sklearn_random():
    from sklearn import (
        metrics as skm,  # not a runtime test: the train extra is installed
    )
    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(2, 60))
        y = rng.random(n) < 0.4
        y[0] = True
        # quantised scores produce ties, like int8 model outputs
        s = np.round(rng.random(n) * 0.5 + 0.5 * y * rng.random(n), 2)
        p, r, t = metrics.precision_recall_curve(y, s)
        p2, r2, t2 = skm.precision_recall_curve(y, s)
        assert np.allclose(t, t2) and np.allclose(p, p2) and np.allclose(r, r2)
        assert metrics.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s))
        threshold, f1 = metrics.best_f1_threshold(y, s)
        assert f1 == pytest.approx(skm.f1_score(y, s >= threshold))
        hits = s[None, :] >= np.unique(s)[:, None]  # brute force over every threshold
        tp = (hits & y).sum(axis=1)
        best = np.max(2 * tp / (hits.sum(axis=1) + y.sum()))
        assert f1 == pytest.approx(best)


def test_pngs(tmp_path):
    r = metrics.classification_report(Y_TRUE, Y_PRED, LABELS)
    assert plots.save_confusion_png(r, tmp_path / "c.png")
    scores = np.eye(3)[[0, 0, 1, 1, 2, 0]] * 0.8 + 0.1
    assert plots.save_pr_png(Y_TRUE, scores, LABELS, tmp_path / "pr.png")
    for name in ("c.png", "pr.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_matplotlib(tmp_path, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    r = metrics.classification_report(Y_TRUE, Y_PRED, LABELS)
    assert plots.save_confusion_png(r, tmp_path / "c.png") is False
    assert not (tmp_path / "c.png").exists()
    assert "matplotlib" in caplog.text

