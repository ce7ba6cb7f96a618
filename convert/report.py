"""The training report: ``report.md`` (for people), ``report.json`` (for programs), ``confusion.png``
and ``pr_curves.png``.

``write_report(out_dir, result)`` takes one dict. Only ``labels`` and ``cv.y_true``/``cv.y_pred`` are
required; a missing optional section is reported as "not measured". Layout::

    result = {
      "name": "mine",                          # bundle / model name
      "created_at": "2026-01-01T00:00:00Z",    # optional, ISO 8601 UTC
      "fieldear_version": "0.1.0",             # optional
      "labels": ["dog", "rain", ...],          # class order of the model's scores
      "dataset": Dataset.summary(),            # convert.data.dataset: counts, problems, duplicates, fingerprint...
      "cv": {                                  # out-of-fold predictions of the chosen candidate
        "scheme": "leave-one-fold-out over 5 folds",   # how the splits were made (text)
        "y_true": [label, ...],                # one entry per clip
        "y_pred": [label, ...],
        "scores": [[p_label0, p_label1, ...], ...],    # optional: clip scores, for PR curves/thresholds
        "paths": [path, ...],                  # optional: each clip's file (the studio lists the CV mistakes)
        "folds": [{"name": "1", "n": 80, "accuracy": 0.95, "macro_f1": 0.95}, ...],  # optional
      },
      "candidates": [                          # every candidate family/setting tried
        {"name": "backbone+logreg(C=1)", "cv_macro_f1": 0.93, "cv_accuracy": 0.93,
         "fold_macro_f1": [..], "seconds": 12.5, "params": 5130, "size_bytes": 4800000,
         "note": "optional text (e.g. skipped: time budget)"},
      ],
      "choice": {"name": "backbone+logreg(C=1)", "why": "best CV macro-F1; ties go to the cheaper model"},
      "train_seconds": 61.2,                   # wall time of the whole training run
      "model": {"size_bytes": 4900000, "params": 4700000, "files": {"backbone.tflite": 4800000}},
      "quantization": {"n_clips": 80, "top1_agreement": 0.99, "float_accuracy": 0.95,
                       "int8_accuracy": 0.94},     # quantization_parity() computes this
      "thresholds": {"dog": 0.41, ...},        # optional: else F1-optimal ones from cv.scores
      "stream": {                              # optional: convert.openset.run.calibrate_streams()
        "choice": {"thresholds": {...}, "smoothing": 1, "min_event_s": 0, "merge_gap_s": 1.16,
                   "novelty_quantile": 0.05, "fits": true},
        "tau": {"dog": 0.8, ...} or null, "max_false_alarms_per_hour": 10,
        "validation": {"duration_s", "n_targets", "n_distractors", "per_label": {label: {precision, recall, f1}},
                       "macro_event_f1", "false_alarms_per_hour", "distractor_hit_rate", "distractors_hit_by_kind"},
        "negatives": {...},                    # what the head was trained against (convert.openset.pool)
      },
    }

:func:`report_metrics` computes the metrics part (classification report, per-label PR summary and
thresholds) without writing anything, so the trainer can put the same numbers into ``model.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from runtime.evaluate import metrics, plots

log = logging.getLogger(__name__)

REPORT_SCHEMA = 1
MAX_LISTED = 50  # problems / duplicate groups listed in report.md (report.json has all)


def _check(result: dict) -> None:
    for key in ("labels", "cv"):
        if key not in result:
            raise ValueError(f"result has no {key!r} (see convert.report's docstring for the layout)")
    cv = result["cv"]
    for key in ("y_true", "y_pred"):
        if key not in cv:
            raise ValueError(f"result['cv'] has no {key!r}")
    if len(cv["y_true"]) != len(cv["y_pred"]):
        raise ValueError(f"cv.y_true has {len(cv['y_true'])} entries, cv.y_pred {len(cv['y_pred'])}")
    if cv.get("scores") is not None:
        shape = np.asarray(cv["scores"]).shape
        if shape != (len(cv["y_true"]), len(result["labels"])):
            raise ValueError(f"cv.scores has shape {shape}, expected ({len(cv['y_true'])}, {len(result['labels'])})")


def quantization_parity(y_true: list[str], float_scores, int8_scores, labels: list[str]) -> dict:
    """The ``quantization`` section: top-1 agreement of int8 and float clip scores, accuracy of both."""
    f = np.asarray(float_scores, dtype=np.float64)
    q = np.asarray(int8_scores, dtype=np.float64)
    if f.shape != q.shape or f.shape != (len(y_true), len(labels)):
        raise ValueError(f"score shapes {f.shape} and {q.shape} do not match ({len(y_true)}, {len(labels)})")
    index = {label: i for i, label in enumerate(labels)}
    truth = np.array([index[t] for t in y_true], dtype=np.int64)
    top_f, top_q = f.argmax(axis=1), q.argmax(axis=1)
    n = len(truth)
    return {
        "n_clips": n,
        "top1_agreement": float(np.mean(top_f == top_q)) if n else 0.0,
        "float_accuracy": float(np.mean(top_f == truth)) if n else 0.0,
        "int8_accuracy": float(np.mean(top_q == truth)) if n else 0.0,
        "max_abs_score_diff": float(np.max(np.abs(f - q))) if n else 0.0,
    }


def report_metrics(result: dict) -> dict:
    """{"report": classification_report, "pr": {label: PR summary} or None, "thresholds": {label: t}}.

    Thresholds are ``result["thresholds"]`` when given, else the F1-optimal ones from ``cv.scores``,
    else 0.5 for every label.
    """
    _check(result)
    labels = list(result["labels"])
    cv = result["cv"]
    report = metrics.classification_report(list(cv["y_true"]), list(cv["y_pred"]), labels)
    pr = None
    if cv.get("scores") is not None:
        pr = metrics.label_thresholds(list(cv["y_true"]), np.asarray(cv["scores"], dtype=np.float64), labels)
    if result.get("thresholds"):
        thresholds = {label: float(result["thresholds"][label]) for label in labels}
    elif pr is not None:
        thresholds = {label: pr[label]["threshold"] for label in labels}
    else:
        thresholds = {label: 0.5 for label in labels}
    return {"report": report, "pr": pr, "thresholds": thresholds}


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"


def _size(n) -> str:
    if n is None:
        return "-"
    n = int(n)
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} MB ({n:,} bytes)"
    if n >= 1_000:
        return f"{n / 1e3:.1f} kB ({n:,} bytes)"
    return f"{n} bytes"


def _table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def _overall(rep: dict) -> list[str]:
    rows = [
        [name, _num(rep["macro"][key]), _num(rep["weighted"][key])]
        for key, name in (("recall", "recall"), ("precision", "precision"), ("f1", "F1"))
    ]
    rows.append(["accuracy", _num(rep["accuracy"]), ""])
    return _table(["metric", "macro", "weighted"], rows)


def _per_label(rep: dict, pr: dict | None, thresholds: dict) -> list[str]:
    header = ["label", "F1", "precision", "recall", "support", "threshold"]
    if pr is not None:
        header += ["F1 at threshold", "average precision"]
    rows = []
    for label in rep["labels"]:
        row = rep["per_label"][label]
        cells = [label, _num(row["f1"]), _num(row["precision"]), _num(row["recall"]), str(row["support"]),
                 _num(thresholds[label])]
        if pr is not None:
            cells += [_num(pr[label]["f1"]), _num(pr[label]["average_precision"])]
        rows.append(cells)
    return _table(header, rows)


def _candidates(result: dict) -> list[str]:
    cands = result.get("candidates") or []
    choice = result.get("choice") or {}
    if not cands:
        lines = ["Not recorded."]
    else:
        rows = []
        for c in cands:
            folds = c.get("fold_macro_f1")
            fold_text = ", ".join(_num(f, 2) for f in folds) if folds else "-"
            rows.append([
                ("**" + c["name"] + "**") if c.get("name") == choice.get("name") else c.get("name", "?"),
                _num(c.get("cv_macro_f1")), _num(c.get("cv_accuracy")), fold_text,
                _num(c.get("seconds"), 1), _num(c.get("params")), _size(c.get("size_bytes")) if c.get("size_bytes") else "-",
                c.get("note", ""),
            ])
        lines = _table(["candidate", "CV macro-F1", "CV accuracy", "per fold macro-F1", "seconds", "parameters",
                        "size", "note"], rows, "lrrlrrrl")
    lines.append("")
    if choice:
        lines.append(f"**Chosen: {choice.get('name', '?')}**" + (f": {choice['why']}" if choice.get("why") else ""))
    return lines


def _quantization(q: dict | None) -> list[str]:
    if not q:
        return ["Not measured."]
    rows = [
        ["validation clips", _num(q.get("n_clips"))],
        ["top-1 agreement int8 vs float", _num(q.get("top1_agreement"))],
        ["float accuracy", _num(q.get("float_accuracy"))],
        ["int8 accuracy", _num(q.get("int8_accuracy"))],
    ]
    if q.get("max_abs_score_diff") is not None:
        rows.append(["largest score difference", _num(q["max_abs_score_diff"])])
    lines = _table(["", "value"], rows)
    fa, ia = q.get("float_accuracy"), q.get("int8_accuracy")
    if fa is not None and ia is not None:
        loss = 100.0 * (float(fa) - float(ia))
        verdict = "within" if loss <= 1.0 else "MORE than"
        lines += ["", f"int8 costs {loss:+.1f} accuracy points against float ({verdict} the 1-point budget of --strict)."]
    return lines


def _dataset(ds: dict | None) -> list[str]:
    if not ds:
        return ["Not recorded."]
    lines = [
        f"- source: `{ds.get('source')}`",
        f"- {ds.get('n_clips', '?')} clips, {len(ds.get('counts', {}))} labels"
        + (f", {ds['hours']:.2f} h of audio" if ds.get("hours") is not None else ""),
        f"- fingerprint: `{ds.get('fingerprint', '-')}`",
    ]
    if ds.get("imbalance"):
        flag = " (imbalanced: over 3x)" if ds["imbalance"] > 3 else ""
        lines.append(f"- largest / smallest class: {ds['imbalance']:.2f}{flag}")
    lines.append("")
    counts = ds.get("counts", {})
    lines += _table(["label", "clips"], [[k, str(v)] for k, v in counts.items()])
    problems = ds.get("problems") or []
    lines += ["", f"**Problems: {len(problems)} file(s) left out**"
              + (" (" + ", ".join(f"{v} {k}" for k, v in sorted(ds.get("problem_counts", {}).items())) + ")"
                 if problems else "")]
    if problems:
        lines.append("")
        lines += _table(["file", "kind", "message"],
                        [[f"`{p['path']}`", p["kind"], p["message"]] for p in problems[:MAX_LISTED]], "lll")
        if len(problems) > MAX_LISTED:
            lines.append(f"... and {len(problems) - MAX_LISTED} more (all in report.json)")
    dups = ds.get("duplicates") or []
    lines += ["", f"**Duplicates: {len(dups)} group(s) of identical audio** (kept on one side of every split)"]
    for group in dups[:MAX_LISTED]:
        lines.append("- " + ", ".join(f"`{p}`" for p in group))
    if len(dups) > MAX_LISTED:
        lines.append(f"- ... and {len(dups) - MAX_LISTED} more (all in report.json)")
    return lines


def _folds(folds: list | None) -> list[str]:
    if not folds:
        return []
    rows = [[str(f.get("name", i + 1)), _num(f.get("n")), _num(f.get("accuracy")), _num(f.get("macro_f1"))]
            for i, f in enumerate(folds)]
    acc = [f["accuracy"] for f in folds if f.get("accuracy") is not None]
    f1 = [f["macro_f1"] for f in folds if f.get("macro_f1") is not None]
    rows.append(["**mean**", "", _num(float(np.mean(acc))) if acc else "-", _num(float(np.mean(f1))) if f1 else "-"])
    return ["", "Per fold:", ""] + _table(["fold", "clips", "accuracy", "macro-F1"], rows)


def _update(update: dict, stream: dict | None, rep: dict) -> list[str]:
    old, new = update.get("from") or {}, (stream or {}).get("validation") or {}
    ov = old.get("stream_validation") or {}
    added = []
    if update.get("background_added"):
        added.append(f"the background in {', '.join(update['background_added'])}")
    if update.get("reviews"):
        added.append(f"the reviewed clips of {', '.join(update['reviews'].get('logs') or [])}")
    lines = [f"The head of `{old.get('name')}` (`{str(old.get('sha256'))[:12]}`) refitted with "
             f"{' and '.join(added) or 'its own training data'}; the backbone and the training clips' embeddings "
             "are unchanged. Stream numbers: each bundle's own validation streams (the new ones include the new "
             "background and the reviewed clips).", ""]
    rows = [["CV accuracy", _num(old.get("cv_accuracy")), _num(rep["accuracy"])],
            ["CV macro-F1", _num(old.get("cv_macro_f1")), _num(rep["macro"]["f1"])],
            ["macro event F1 (streams)", _num(ov.get("macro_event_f1")), _num(new.get("macro_event_f1"))],
            ["false alarms per hour", _num(ov.get("false_alarms_per_hour"), 1), _num(new.get("false_alarms_per_hour"), 1)],
            ["non-target sounds reported", _num(100 * ov["distractor_hit_rate"], 0) + " %" if ov else "n/a",
             _num(100 * new["distractor_hit_rate"], 0) + " %" if new else "n/a"],
            ["stream minutes", _num(ov.get("duration_s", 0) / 60, 1), _num(new.get("duration_s", 0) / 60, 1)]]
    lines += _table(["", "before", "after"], rows)
    if update.get("reviews"):
        lines += ["", "### Reviews from the field", ""] + _reviews(update["reviews"])
    return lines


def _reviews(r: dict) -> list[str]:
    by = r.get("by_action_label") or {}
    lines = [f"{r.get('reviewed_events', 0)} reviewed event(s), {r.get('clips', 0)} with a clip (the latest verdict "
             f"of each); {r.get('missing_clips', 0)} without a saved clip left out"
             + (", left out as labels the bundle does not have: " + ", ".join(
                 f"{k} ({n})" for k, n in r["skipped_unknown_label"].items()) if r.get("skipped_unknown_label") else "")
             + ".", ""]
    rows = [[action, label, str(n)] for action, labels in by.items() for label, n in labels.items()]
    lines += _table(["verdict", "clip is", "clips"], rows)
    t = r.get("trained") or {}
    pos = t.get("positives") or {}
    lines += ["", f"Trained on: {sum(pos.values())} positive(s) ("
              + (", ".join(f"{k} {n}" for k, n in pos.items()) or "none") + f"), {t.get('negatives', 0)} hard "
              f"negative(s) (rejected or relabelled to background; category `review:rejected`); in all now "
              f"{r.get('clips_in_training', 0)} reviewed clip(s) among the training clips and "
              f"{r.get('hard_negatives_in_training', 0)} hard negative(s) (earlier updates included). Each reviewed "
              "clip's plain embedding stands in its level-shifted and mixed copies.", ""]
    cmp_ = r.get("held_out_comparison")
    share = _num(100 * r.get("held_out_share", 0.3), 0)
    if not cmp_:
        return lines + [f"On held-out reviews: none held out ({share} % of the clips by a hash of their sha256; "
                        "too few reviewed clips)."]
    b, a = cmp_["before"], cmp_["after"]
    lines += [f"On held-out reviews ({r.get('held_out', 0)} clip(s), a stable {share} % by sha256, never trained "
              "on): each bundle's gated block scores against its own stream thresholds; a confirmed clip is "
              "detected when its label's best block reaches the label's threshold, a rejected one is a false "
              "alarm when any label's does.", ""]
    rows = [["positives detected", f"{b['detected']}/{b['positives']}", f"{a['detected']}/{a['positives']}"],
            ["recall", _num(b["recall"]), _num(a["recall"])],
            ["negatives reported (false alarms)", f"{b['false_alarms']}/{b['negatives']}",
             f"{a['false_alarms']}/{a['negatives']}"],
            ["false-alarm rate", _num(b["false_alarm_rate"]), _num(a["false_alarm_rate"])]]
    return lines + _table(["", "before", "after"], rows)


def _stream(stream: dict | None) -> list[str]:
    if not stream:
        return ["Not measured (a closed-set model: no negatives, no validation streams). `listen` raises the "
                "clip thresholds to 0.5."]
    c, v, neg = stream["choice"], stream["validation"], stream.get("negatives") or {}
    lines = [f"Validation streams: each fold's held-out clips ({v['n_targets']}) and held-out non-target sounds "
             f"({v['n_distractors']}) in random order over held-out background, {_num(v['duration_s'] / 60, 1)} min "
             "in all, scored by each fold's int8 model with the device's detector. The settings below maximise "
             f"macro event F1 with at most {_num(stream['max_false_alarms_per_hour'], 0)} false alarms per hour; "
             "they are stored in the bundle as `listen`'s defaults (flags and fieldear.toml override them).", ""]
    if not v["n_distractors"]:
        lines += ["No non-target sounds were played: the built-in ones exist as aisfx embeddings only, which this "
                  "model's backbone cannot use; false alarms were measured on background alone (pass --background "
                  "with recordings of the site, sounds of it included, for a closer estimate).", ""]
    if not c.get("fits", True):
        lines += ["**No setting met the false-alarm budget; the quietest one found is used.**", ""]
    q = c.get("novelty_quantile")
    rows = [["smoothing", f"{c['smoothing']} block(s)"], ["minimum event", f"{_num(c['min_event_s'], 2)} s"],
            ["merge gap", f"{_num(c['merge_gap_s'], 2)} s"],
            ["unknown-sound cut", ("none" if stream.get("novelty_offered", True) else
                                   "not offered (its prototypes would be BirdNET embeddings, never kept in a bundle)")
             if q is None else
             f"a label scores 0 on a block less similar to its training blocks than {_num(100 * q, 0)} % of its "
             "held-out blocks"],
            ["false alarms per hour", _num(v["false_alarms_per_hour"], 1)],
            ["non-target sounds reported", f"{_num(100 * v['distractor_hit_rate'], 0)} %"]]
    lines += _table(["", "chosen"], rows) + [""]
    lines += _table(["label", "stream threshold", "event precision", "event recall", "event F1"],
                    [[label, _num(c["thresholds"][label], 2), _num(m["precision"]), _num(m["recall"]), _num(m["f1"])]
                     for label, m in v["per_label"].items()])
    hits = v.get("distractors_hit_by_kind") or {}
    if hits:
        lines += ["", "Non-target sounds reported, by kind: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in hits.items())]
    dropped = neg.get("builtin_dropped") or {}
    if neg:
        b = neg.get("blocks", {})
        lines += ["", f"Negatives: {b.get('bed', 0)} background and {b.get('event', 0)} non-target blocks "
                  f"({neg.get('builtin_items', 0)} built-in items, "
                  + (f"{neg['builtin_beds']} built-in bed recordings embedded by this model's backbone, "
                     if neg.get("builtin_beds") else "")
                  + f"{len(neg.get('background_files', []))} --background file(s)); built-in items left out as too "
                  "similar to a label: "
                  + (", ".join(f"{k}: {d['n']} ({', '.join(d['categories'])})" for k, d in dropped.items()) or "none")]
    return lines


def render_markdown(result: dict, computed: dict, pngs: dict[str, bool]) -> str:
    rep, pr, thresholds = computed["report"], computed["pr"], computed["thresholds"]
    cv = result["cv"]
    model = result.get("model") or {}
    name = result.get("name", "model")
    lines = [f"# fieldear training report: {name}", ""]
    meta = [f"created {result['created_at']}" if result.get("created_at") else "",
            f"fieldear {result['fieldear_version']}" if result.get("fieldear_version") else ""]
    if any(meta):
        lines += [", ".join(m for m in meta if m), ""]
    choice = (result.get("choice") or {}).get("name")
    lines += [
        "## Summary",
        "",
        f"- model: {choice or 'not recorded'}; {len(rep['labels'])} labels: {', '.join(rep['labels'])}",
        f"- cross-validated accuracy {_num(rep['accuracy'])}, macro-F1 {_num(rep['macro']['f1'])} "
        f"on {rep['n']} clips ({cv.get('scheme', 'scheme not recorded')})",
        f"- training wall time: {_num(result.get('train_seconds'), 1)} s",
        f"- model size: {_size(model.get('size_bytes'))}, parameters: {_num(model.get('params'))}",
    ]
    if result.get("licence_notice"):
        lines.append(f"- **{result['licence_notice']}**")
    q = result.get("quantization") or {}
    if q.get("top1_agreement") is not None:
        lines.append(f"- int8 vs float: top-1 agreement {_num(q['top1_agreement'])}, accuracy "
                     f"{_num(q.get('int8_accuracy'))} (int8) vs {_num(q.get('float_accuracy'))} (float)")
    v = (result.get("stream") or {}).get("validation")
    if v:
        lines.append(f"- validation streams: macro event F1 {_num(v['macro_event_f1'])}, "
                     f"{_num(v['false_alarms_per_hour'], 1)} false alarms per hour, "
                     f"{_num(100 * v['distractor_hit_rate'], 0)} % of non-target sounds reported")
    lines += ["", "## Overall (out-of-fold predictions)", ""] + _overall(rep) + _folds(cv.get("folds"))
    lines += ["", "## Per label", "", "Threshold: the F1-optimal score threshold per label (one vs rest, from the "
              "cross-validation scores); stored in the bundle for clips (`predict`, `batch`, `evaluate`); streams use the stream thresholds below.", ""]
    lines += _per_label(rep, pr, thresholds)
    lines += ["", "## Confusion matrix", "", "Rows: true label; columns: predicted label.", "", "```",
              metrics.confusion_text(rep), "```", ""]
    lines.append("![confusion matrix](confusion.png)" if pngs.get("confusion.png")
                 else "(confusion.png not written: matplotlib is not installed)")
    lines += ["", "## Precision-recall per label", ""]
    if pr is None:
        lines.append("Not measured (no clip scores recorded).")
    else:
        rows = [[label, str(pr[label]["positives"]), _num(pr[label]["average_precision"]), _num(pr[label]["threshold"]),
                 _num(pr[label]["precision"]), _num(pr[label]["recall"]), _num(pr[label]["f1"])]
                for label in rep["labels"]]
        lines += _table(["label", "positives", "average precision", "F1-optimal threshold", "precision there",
                         "recall there", "F1 there"], rows)
        lines.append("")
        lines.append("![precision-recall curves](pr_curves.png)" if pngs.get("pr_curves.png")
                     else "(pr_curves.png not written: matplotlib is not installed)")
    if result.get("update"):
        lines += ["", "## Update (site adaptation)", ""] + _update(result["update"], result.get("stream"), rep)
    lines += ["", "## Streams: listen's defaults", ""] + _stream(result.get("stream"))
    lines += ["", "## Candidates tried (cross-validation)", ""] + _candidates(result)
    lines += ["", "## Model", ""]
    files = model.get("files") or {}
    rows = [["total size", _size(model.get("size_bytes"))], ["parameters", _num(model.get("params"))],
            ["training wall time", f"{_num(result.get('train_seconds'), 1)} s"]]
    if model.get("training_blocks"):
        rows.append(["head training data", str(model["training_blocks"])])
    rows += [[f"`{fname}`", _size(size)] for fname, size in files.items()]
    lines += _table(["", "value"], rows)
    lines += ["", "## int8 vs float", ""] + _quantization(result.get("quantization"))
    lines += ["", "## Dataset", ""] + _dataset(result.get("dataset"))
    return "\n".join(lines) + "\n"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(out_dir: str | os.PathLike, result: dict) -> None:
    """Write report.md, report.json, confusion.png and (with clip scores) pr_curves.png into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    computed = report_metrics(result)
    pngs = {"confusion.png": plots.save_confusion_png(computed["report"], out / "confusion.png")}
    cv = result["cv"]
    if cv.get("scores") is not None:
        pngs["pr_curves.png"] = plots.save_pr_png(
            list(cv["y_true"]), np.asarray(cv["scores"], dtype=np.float64), list(result["labels"]), out / "pr_curves.png"
        )
    payload = {"report_schema": REPORT_SCHEMA, **result, "metrics": computed["report"], "pr": computed["pr"],
               "thresholds": computed["thresholds"], "plots": [name for name, ok in pngs.items() if ok]}
    (out / "report.json").write_text(json.dumps(_jsonable(payload), indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(result, computed, pngs), encoding="utf-8")
    log.debug("report written to %s (accuracy %.3f, macro-F1 %.3f)", out / "report.md",
             computed["report"]["accuracy"], computed["report"]["macro"]["f1"])
