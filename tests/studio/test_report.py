"""The report page's data from a real bundle, and the threshold slider's save keeping the bundle loadable."""

from __future__ import annotations

import json

import pytest

from convert.studio.report import report_view, save_thresholds
from runtime.errors import FieldearError

pytestmark = pytest.mark.train


def test_report_view_is_the_bundle_report(trained_project):
    bundle = trained_project.path / "bundles" / "v1"
    report = json.loads((bundle / "report.json").read_text())
    view = report_view(bundle, set(trained_project.labels()))
    m = report["metrics"]
    assert view["overall"]["accuracy"] == m["accuracy"] and view["overall"]["f1"] == m["macro"]["f1"]
    assert [r["support"] for r in view["per_label"]] == [6, 6]
    assert view["confusion"]["matrix"] == m["confusion"]["matrix"]
    cv = report["cv"]
    wrong = [i for i, (t, p) in enumerate(zip(cv["y_true"], cv["y_pred"])) if t != p]
    assert [r["index"] for r in view["mistakes"]] == wrong
    assert all(r["file"] in trained_project.labels() for r in view["mistakes"])
    # the curve at the trained F1-optimal threshold gives the report's precision and recall
    for label in view["labels"]:
        t = report["pr"][label]["threshold"]
        at = min((p for p in view["curves"][label] if p["threshold"] >= t), key=lambda p: p["threshold"])
        assert (at["precision"], at["recall"]) == pytest.approx((report["pr"][label]["precision"],
                                                                  report["pr"][label]["recall"]), abs=1e-4)
    assert view["candidates"] and view["quantization"]["n_clips"] == 12


def test_saved_thresholds_keep_the_bundle_loadable(trained_project, tmp_path):
    import shutil

    from runtime.model.bundle import load_bundle

    bundle = tmp_path / "v1"
    shutil.copytree(trained_project.path / "bundles" / "v1", bundle)
    before = load_bundle(bundle).sha256
    saved = save_thresholds(bundle, {"dog": 0.7})
    loaded = load_bundle(bundle)
    assert loaded.thresholds["dog"] == 0.7 == saved["dog"] and loaded.sha256 != before
    assert report_view(bundle)["thresholds"]["dog"] == 0.7
    with pytest.raises(FieldearError, match=r"in \[0, 1\]"):
        save_thresholds(bundle, {"dog": 1.5})
    with pytest.raises(FieldearError, match="not labels"):
        save_thresholds(bundle, {"cat": 0.5})
    assert load_bundle(bundle).thresholds["dog"] == 0.7
