"""convert.report: renders report.md/.json/.png from a synthetic training result."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest

from convert.report import quantization_parity, report_metrics, write_report
from runtime.evaluate import metrics

LABELS = ["dog", "rain", "rooster"]


def synthetic_result(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y_true = [LABELS[i] for i in np.repeat(np.arange(3), 10)]
    logits = rng.normal(size=(30, 3)) + 2.5 * np.eye(3)[np.repeat(np.arange(3), 10)]
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    int8 = np.round(scores * 256) / 256
    y_pred = [LABELS[i] for i in int8.argmax(axis=1)]
    return {
        "name": "synthetic",
        "created_at": "2026-01-01T00:00:00Z",
        "fieldear_version": "0.1.0",
        "labels": LABELS,
        "dataset": {
            "source": "/data/x", "n_clips": 31, "labels": LABELS, "counts": {"dog": 11, "rain": 10, "rooster": 10},
            "fingerprint": "ab" * 32, "hours": 0.04, "imbalance": 1.1, "has_folds": False, "has_groups": False,
            "problems": [{"path": "/data/x/dog/zero.wav", "kind": "empty", "message": "empty file (0 bytes)"}],
            "problem_counts": {"empty": 1},
            "duplicates": [["/data/x/dog/a.wav", "/data/x/dog/a_copy.wav"]], "n_duplicate_clips": 1,
        },
        "cv": {"scheme": "stratified group 5-fold, seed 0", "y_true": y_true, "y_pred": y_pred, "scores": int8,
               "folds": [{"name": str(k + 1), "n": 6, "accuracy": 0.8 + 0.05 * k, "macro_f1": 0.75 + 0.05 * k}
                         for k in range(5)]},
        "candidates": [
            {"name": "backbone+logreg(C=1)", "cv_macro_f1": 0.91, "cv_accuracy": 0.92,
             "fold_macro_f1": [0.9, 0.92, 0.91, 0.9, 0.92], "seconds": 14.2, "params": 1539, "size_bytes": 4_812_345},
            {"name": "cnn-small", "cv_macro_f1": 0.83, "cv_accuracy": 0.84, "seconds": 40.0, "params": 61000,
             "size_bytes": 80_123, "note": "3 of 5 folds (time budget)"},
        ],
        "choice": {"name": "backbone+logreg(C=1)", "why": "best CV macro-F1 (0.91 vs 0.83)"},
        "train_seconds": 58.7,
        "model": {"size_bytes": 4_900_000, "params": 4_701_539,
                  "files": {"backbone.tflite": 4_812_345, "head.tflite": 87_655}},
        "quantization": quantization_parity(y_true, scores, int8, LABELS),
    }


def test_report_renders(tmp_path):
    result = synthetic_result()
    write_report(tmp_path / "rep", result)
    out = tmp_path / "rep"
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "pr_curves.png", "report.json", "report.md"]
    for png in ("confusion.png", "pr_curves.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "report.json").read_text())
    rep = metrics.classification_report(result["cv"]["y_true"], result["cv"]["y_pred"], LABELS)
    assert data["metrics"]["accuracy"] == pytest.approx(rep["accuracy"])
    assert data["metrics"]["macro"]["f1"] == pytest.approx(rep["macro"]["f1"])
    assert data["name"] == "synthetic" and data["plots"] == ["confusion.png", "pr_curves.png"]
    assert set(data["thresholds"]) == set(LABELS)
    assert len(data["cv"]["scores"]) == 30  # numpy arrays became lists
    md = (out / "report.md").read_text()
    for heading in ("## Overall", "## Per label", "## Confusion matrix", "## Precision-recall per label",
                    "## Candidates tried", "## Model", "## int8 vs float", "## Dataset"):
        assert heading in md
    assert f"| accuracy | {rep['accuracy']:.3f} |" in md
    assert f"| F1 | {rep['macro']['f1']:.3f} | {rep['weighted']['f1']:.3f} |" in md
    dog = rep["per_label"]["dog"]
    assert f"| dog | {dog['f1']:.3f} | {dog['precision']:.3f} | {dog['recall']:.3f} | {dog['support']} |" in md
    assert metrics.confusion_text(rep) in md
    assert "**Chosen: backbone+logreg(C=1)**: best CV macro-F1" in md
    assert "| **backbone+logreg(C=1)** | 0.910 | 0.920 |" in md and "3 of 5 folds (time budget)" in md
    assert "58.7 s" in md and "4,701,539" in md and "4.90 MB" in md
    assert "| **mean** |  | 0.900 | 0.850 |" in md
    assert "empty file (0 bytes)" in md and "`/data/x/dog/a_copy.wav`" in md
    assert f"top-1 agreement {result['quantization']['top1_agreement']:.3f}" in md


def test_thresholds_and_parity():
    result = synthetic_result(1)
    computed = report_metrics(result)
    scores = np.asarray(result["cv"]["scores"])
    for i, label in enumerate(LABELS):
        t, f1 = metrics.best_f1_threshold(np.array(result["cv"]["y_true"]) == label, scores[:, i])
        assert computed["thresholds"][label] == t and computed["pr"][label]["f1"] == f1
    result["thresholds"] = {"dog": 0.3, "rain": 0.4, "rooster": 0.6}
    assert report_metrics(result)["thresholds"] == result["thresholds"]
    q = quantization_parity(["dog", "rain"], [[0.6, 0.4, 0], [0.5, 0.4, 0.1]], [[0.6, 0.4, 0], [0.4, 0.5, 0.1]], LABELS)
    assert q == pytest.approx({"n_clips": 2, "top1_agreement": 0.5, "float_accuracy": 0.5, "int8_accuracy": 1.0,
                               "max_abs_score_diff": 0.1})


def test_minimal_result_and_no_matplotlib(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    minimal = {"labels": ["a", "b"], "cv": {"y_true": ["a", "b", "b"], "y_pred": ["a", "b", "a"]}}
    write_report(tmp_path, minimal)
    md = (tmp_path / "report.md").read_text()
    assert "Not measured" in md and "matplotlib is not installed" in md
    assert not (tmp_path / "confusion.png").exists()
    assert json.loads((tmp_path / "report.json").read_text())["thresholds"] == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="y_pred"):
        write_report(tmp_path, {"labels": ["a"], "cv": {"y_true": ["a"]}})
    with pytest.raises(ValueError, match="shape"):
        write_report(tmp_path, {"labels": ["a", "b"], "cv": {"y_true": ["a"], "y_pred": ["a"], "scores": [[1.0]]}})
