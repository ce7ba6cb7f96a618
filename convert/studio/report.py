"""What the studio's report page shows, read from a bundle's report.json and model.json, and the threshold slider's
save: chosen clip thresholds written into model.json with its checksum renewed, so the runtime's ``load_bundle``
(which refuses a model.json whose ``json_sha256`` does not match) still loads the bundle.

Reference layout: overall accuracy, precision, recall, F1 (macro over labels); per label F1, precision, recall,
support; the confusion matrix; per-label one-vs-rest precision-recall curves of the cross-validated int8 clip
scores; the candidates tried; int8 parity; the stream metrics when the bundle has them; the CV mistakes as clips.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from runtime.errors import BundleError, FieldearError

log = logging.getLogger(__name__)

CURVE_POINTS = 200  # at most this many points per precision-recall curve sent to the page


def read_report(bundle: Path) -> dict:
    try:
        return json.loads((Path(bundle) / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FieldearError(f"no readable report.json in {bundle}", "train the project again") from exc


def pr_curve(y_true: list[str], scores: np.ndarray, label: str, labels: list[str]) -> list[dict]:
    """One-vs-rest (threshold, precision, recall) points for ``label``, predicting it when its score >= threshold."""
    from runtime.evaluate.metrics import precision_recall_curve

    y = np.asarray(y_true, dtype=object) == label
    precision, recall, thresholds = precision_recall_curve(y, scores[:, labels.index(label)])
    points = [{"threshold": round(float(t), 5), "precision": round(float(p), 5), "recall": round(float(r), 5)}
              for t, p, r in zip(thresholds, precision[:-1], recall[:-1])]
    if len(points) > CURVE_POINTS:
        keep = np.unique(np.linspace(0, len(points) - 1, CURVE_POINTS).round().astype(int))
        points = [points[i] for i in keep]
    return points


def mistakes(report: dict, audio_files: set[str] | None = None) -> list[dict]:
    """The clips cross-validation got wrong: file (the name under the project's audio/ when it is one), truth,
    prediction and its int8 score."""
    cv = report["cv"]
    labels = report["labels"]
    paths = cv.get("paths") or [None] * len(cv["y_true"])
    rows = []
    for i, (truth, pred) in enumerate(zip(cv["y_true"], cv["y_pred"])):
        if truth == pred:
            continue
        name = Path(paths[i]).name if paths[i] else None
        rows.append({"index": i, "path": paths[i], "file": name if audio_files is None or name in audio_files else None,
                     "truth": truth, "predicted": pred, "score": cv["scores"][i][labels.index(pred)],
                     "truth_score": cv["scores"][i][labels.index(truth)]})
    return rows


def report_view(bundle: Path, audio_files: set[str] | None = None) -> dict:
    """Everything the report page shows about ``bundle`` (see the module doc)."""
    bundle = Path(bundle)
    report = read_report(bundle)
    meta = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    labels = list(report["labels"])
    m = report["metrics"]
    overall = {"accuracy": m["accuracy"], "precision": m["macro"]["precision"], "recall": m["macro"]["recall"],
               "f1": m["macro"]["f1"], "weighted_f1": m["weighted"]["f1"], "n": m["n"]}
    per_label = [{"label": lab, **{k: m["per_label"][lab][k] for k in ("f1", "precision", "recall", "support")}}
                 for lab in labels]
    scores = np.asarray(report["cv"]["scores"], dtype=np.float64)
    curves = {lab: pr_curve(report["cv"]["y_true"], scores, lab, labels) for lab in labels}
    stream = report.get("stream") or None
    return {
        "name": report.get("name"), "version": bundle.name, "labels": labels, "overall": overall,
        "per_label": per_label, "confusion": m["confusion"], "curves": curves, "pr": report.get("pr"),
        "thresholds": {lab: float(meta.get("thresholds", {}).get(lab, 0.5)) for lab in labels},
        "trained_thresholds": report.get("thresholds"), "candidates": report.get("candidates", []),
        "choice": report.get("choice"), "quantization": report.get("quantization"),
        "stream": stream["validation"] if stream else None, "cv_scheme": report["cv"]["scheme"],
        "seed": report.get("seed"), "time_budget_s": report.get("time_budget_s"),
        "train_seconds": report.get("train_seconds"), "dataset": report.get("dataset"),
        "mistakes": mistakes(report, audio_files),
    }


def save_thresholds(bundle: Path, thresholds: dict[str, float]) -> dict:
    """Write chosen clip thresholds (label -> value in [0, 1]) into the bundle's model.json, renewing its
    checksum; the bundle is loaded with the runtime's checks before it replaces the old model.json."""
    from runtime.model.bundle import MODEL_JSON, canonical_sha, load_bundle

    bundle = Path(bundle)
    path = bundle / MODEL_JSON
    meta = json.loads(path.read_text(encoding="utf-8"))
    labels = list(meta["labels"])
    unknown = [k for k in thresholds if k not in labels]
    if unknown:
        raise FieldearError(f"not labels of {bundle.name}: {', '.join(unknown)}")
    chosen = {}
    for label in labels:
        value = thresholds.get(label, meta.get("thresholds", {}).get(label, 0.5))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise FieldearError(f"threshold for {label!r} must be a number in [0, 1] (got {value!r})")
        chosen[label] = round(float(value), 4)
    meta["thresholds"] = chosen
    meta["json_sha256"] = canonical_sha(meta)
    old = path.read_bytes()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    try:
        load_bundle(bundle)  # the runtime's own checks on the new model.json
    except BundleError:
        tmp.write_bytes(old)
        os.replace(tmp, path)
        raise
    log.info("thresholds of %s set to %s", bundle, chosen)
    return chosen
