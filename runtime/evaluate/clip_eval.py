"""Evaluate batch predictions (``fieldear batch`` CSV/JSONL) against truth labels.

Truth comes from the file name (``prefix``: the part before the first ``_``), the parent folder
(``folder``) or a CSV with ``path,label`` columns. Each row's prediction is its best-scoring label, or
``unknown`` when that score is below the label's threshold (bundle defaults with ``--model``, and/or
``--threshold X`` / ``label=X``), and always ``unknown`` when the batch said so (``fieldear batch --unknown``:
``known`` 0, label ``unknown``); an unknown row is a miss for its true label. Rows without truth and failed rows are listed in the report, never
dropped silently. The metrics are ``runtime.metrics``'s (same definitions as scikit-learn).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from runtime.detect.thresholds import check_known, parse_threshold_specs
from runtime.errors import FieldearError

log = logging.getLogger(__name__)

UNKNOWN = "unknown"  # the outcome of a clip that is none of the labels (also runtime.predict's)
SCORE_PREFIX = "score_"
KNOWN_COLUMN = "known"  # runtime.predict.batch: 0 in a row `fieldear batch --unknown` found unknown
TRUTH_MODES = ("prefix", "folder")


# ---------------------------------------------------------------- reading


def read_predictions(path: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """Rows and the model's labels (from the ``score_<label>`` columns, in order)."""
    p = Path(path)
    if not p.is_file():
        raise FieldearError(f"predictions file not found: {p}", "pass the --out file of `fieldear batch`")
    rows: list[dict] = []
    try:
        with open(p, newline="", encoding="utf-8") as f:
            if p.suffix.lower() == ".csv":
                reader = csv.DictReader(f)
                columns = list(reader.fieldnames or [])
                rows = [dict(r) for r in reader]
            else:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        raise FieldearError(f"{p}: line {n} is not JSON") from None
                    if not isinstance(row, dict):
                        raise FieldearError(f"{p}: line {n} is not a JSON object")
                    rows.append(row)
                columns = list(rows[0]) if rows else []
    except UnicodeDecodeError:
        raise FieldearError(f"{p}: not a text file", "pass the CSV or JSONL that `fieldear batch` wrote") from None
    labels = [c[len(SCORE_PREFIX):] for c in columns if c.startswith(SCORE_PREFIX)]
    if "path" not in columns or not labels:
        raise FieldearError(f"{p}: not a predictions file (needs a path column and score_<label> columns)",
                            "pass the --out file of `fieldear batch`")
    return rows, labels


def row_scores(row: dict, labels: list[str]) -> list[float] | None:
    """The row's label scores, or None for a failed row (error set or scores missing)."""
    if str(row.get("error") or "").strip():
        return None
    out = []
    for lab in labels:
        value = row.get(SCORE_PREFIX + lab, "")
        try:
            s = float(value)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(s):
            return None
        out.append(s)
    return out


def row_unknown(row: dict, labels: list[str]) -> bool:
    """The batch already found the clip unknown (``--unknown``): ``known`` 0, or label ``unknown`` when no model
    label has that name. A file written without --unknown has neither."""
    known = row.get(KNOWN_COLUMN)
    if known is not None and str(known).strip().lower() in ("0", "false"):
        return True
    return UNKNOWN not in labels and str(row.get("label") or "").strip() == UNKNOWN


# ---------------------------------------------------------------- truth


def truth_from_name(path: str, mode: str) -> str | None:
    p = Path(path)
    if mode == "prefix":
        head, sep, _ = p.stem.partition("_")
        return head if sep and head else None
    if mode == "folder":
        return p.parent.name or None
    raise ValueError(mode)


class TruthTable:
    """path -> label from a CSV; matches by path as written, absolute path, or unique file name."""

    def __init__(self, csv_path: str | os.PathLike):
        self.source = Path(csv_path)
        if not self.source.is_file():
            raise FieldearError(f"truth file not found: {self.source}",
                                f"--truth is one of {', '.join(TRUTH_MODES)} or a CSV file with path,label columns")
        self.exact: dict[str, str] = {}
        self.absolute: dict[str, str] = {}
        by_name: dict[str, set[str]] = {}
        base = self.source.resolve().parent
        with open(self.source, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            first = next(reader, None)
            if first is None:
                raise FieldearError(f"{self.source}: empty truth file")
            header = [c.strip().lower() for c in first]
            if "path" in header and "label" in header:
                ip, il = header.index("path"), header.index("label")
                body = reader
            else:
                ip, il = 0, 1
                body = [first, *reader]
            for n, rec in enumerate(body, 2):
                if not rec or not "".join(rec).strip():
                    continue
                if len(rec) <= max(ip, il) or not rec[ip].strip() or not rec[il].strip():
                    raise FieldearError(f"{self.source}: line {n} needs a path and a label")
                path, label = rec[ip].strip(), rec[il].strip()
                self.exact[path] = label
                self.absolute[_norm(path, base)] = label
                by_name.setdefault(os.path.basename(path), set()).add(label)
        self.by_name = {k: next(iter(v)) for k, v in by_name.items() if len(v) == 1}

    def lookup(self, path: str) -> str | None:
        if path in self.exact:
            return self.exact[path]
        hit = self.absolute.get(_norm(path, Path.cwd()))
        if hit is not None:
            return hit
        return self.by_name.get(os.path.basename(path))


def _norm(path: str, base: Path) -> str:
    p = Path(path)
    return os.path.normcase(os.path.normpath(str(p if p.is_absolute() else base / p)))


def truth_function(spec: str):
    """``prefix``, ``folder`` or a CSV path -> function(path) -> label or None."""
    if spec in TRUTH_MODES:
        return lambda path: truth_from_name(path, spec)
    return TruthTable(spec).lookup


# ---------------------------------------------------------------- thresholds


def parse_thresholds(specs: list[str] | None, labels: list[str]) -> tuple[float | None, dict[str, float]]:
    """``["0.5", "dog=0.7"]`` -> (0.5, {"dog": 0.7}); values in [0, 1], labels must exist."""
    default, per_label = parse_threshold_specs(specs)
    check_known(per_label, labels)
    return default, per_label


def resolve_thresholds(labels: list[str], specs: list[str] | None, bundle=None) -> dict[str, float]:
    """Per-label thresholds: 0 (plain argmax), then the bundle's, then --threshold X, then label=X."""
    default, per_label = parse_thresholds(specs, labels)
    out = {lab: 0.0 for lab in labels}
    if bundle is not None:
        out.update({lab: bundle.threshold(lab, 0.0) for lab in labels})
    if default is not None:
        out = {lab: default for lab in labels}
    out.update(per_label)
    return out


def decide(scores: list[float], labels: list[str], thresholds: dict[str, float]) -> tuple[str, float]:
    """(predicted label or ``unknown``, top score)."""
    best = max(range(len(labels)), key=lambda i: (scores[i], -i))
    label, score = labels[best], scores[best]
    return (label if score >= thresholds.get(label, 0.0) else UNKNOWN), score


# ---------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    report: dict  # runtime.metrics.classification_report of the rows with truth
    labels: list[str]
    thresholds: dict[str, float]
    n_rows: int
    failed: list[dict] = field(default_factory=list)  # {"path", "error"}
    no_truth: list[dict] = field(default_factory=list)  # {"path", "predicted", "score"}
    unknown_truth: dict[str, int] = field(default_factory=dict)  # truth labels the model does not have
    model_shas: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"n_rows": self.n_rows, "n_evaluated": self.report["n"], "labels": self.labels,
                "thresholds": self.thresholds, "model_sha": self.model_shas, "report": self.report,
                "failed": self.failed, "no_truth": self.no_truth, "truth_labels_not_in_model": self.unknown_truth}


def evaluate_rows(rows: list[dict], labels: list[str], truth, thresholds: dict[str, float]) -> Evaluation:
    from runtime.evaluate.metrics import classification_report

    y_true: list[str] = []
    y_pred: list[str] = []
    failed, no_truth = [], []
    for row in rows:
        path = str(row.get("path", ""))
        scores = row_scores(row, labels)
        if scores is None:
            failed.append({"path": path, "error": str(row.get("error") or "no scores in the row")})
            continue
        pred, top = decide(scores, labels, thresholds)
        if row_unknown(row, labels):
            pred = UNKNOWN
        true = truth(path)
        if true is None:
            no_truth.append({"path": path, "predicted": pred, "score": round(top, 6)})
            continue
        y_true.append(true)
        y_pred.append(pred)
    unknown_truth: dict[str, int] = {}
    for t in y_true:
        if t not in labels:
            unknown_truth[t] = unknown_truth.get(t, 0) + 1
    # labels that occur (in truth or predictions), in model order: a model label the data never has and the
    # model never predicts would count as F1 0 and drag the macro average down for nothing (as sklearn does)
    seen = set(y_true) | set(y_pred)
    scored = [label for label in labels if label in seen] + sorted(unknown_truth)
    report = classification_report(y_true, y_pred, scored)
    shas = sorted({str(r.get("model_sha")) for r in rows if r.get("model_sha")})
    return Evaluation(report=report, labels=labels, thresholds=thresholds, n_rows=len(rows), failed=failed,
                      no_truth=no_truth, unknown_truth=unknown_truth, model_shas=shas)


def report_text(ev: Evaluation, truth_spec: str, list_limit: int = 20) -> str:
    from runtime.evaluate.metrics import confusion_text, format_report_table

    lines = []
    if ev.report["n"]:
        lines.append(format_report_table(ev.report, title=f"Evaluation of {ev.report['n']} files (truth: {truth_spec})"))
        lines += ["", "Confusion (rows: truth, columns: predicted)", confusion_text(ev.report)]
    else:
        lines.append(f"No file has a truth label (truth: {truth_spec}); nothing to score.")
    used = {k: v for k, v in ev.thresholds.items() if v > 0}
    lines.append("")
    lines.append("thresholds: " + (", ".join(f"{k}={v:g}" for k, v in used.items()) if used else "none (best label wins)"))
    if ev.unknown_truth:
        lines.append("truth labels the model does not have: "
                     + ", ".join(f"{k} ({v})" for k, v in sorted(ev.unknown_truth.items()))
                     + (" -- try --truth folder" if truth_spec == "prefix" else ""))
    for title, items, fmt in (
        ("files without truth", ev.no_truth, lambda d: f"  {d['path']}  -> {d['predicted']} {d['score']:.3f}"),
        ("failed files (not scored)", ev.failed, lambda d: f"  {d['path']}: {d['error']}"),
    ):
        if items:
            lines.append(f"{title}: {len(items)}")
            lines += [fmt(d) for d in items[:list_limit]]
            if len(items) > list_limit:
                lines.append(f"  ... {len(items) - list_limit} more (all listed in the report directory)")
    return "\n".join(lines)


def write_report(ev: Evaluation, text: str, out_dir: str | os.PathLike) -> list[Path]:
    """report.txt, report.json, confusion.json, no_truth.csv, failed.csv and confusion.png (if matplotlib)."""
    from runtime.evaluate.plots import save_confusion_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def put(name: str, content: str) -> None:
        (out / name).write_text(content, encoding="utf-8")
        written.append(out / name)

    put("report.txt", text + "\n")
    put("report.json", json.dumps(ev.to_dict(), indent=2) + "\n")
    put("confusion.json", json.dumps(ev.report["confusion"], indent=2) + "\n")
    for name, items, cols in (("no_truth.csv", ev.no_truth, ["path", "predicted", "score"]),
                              ("failed.csv", ev.failed, ["path", "error"])):
        with open(out / name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(items)
        written.append(out / name)
    if ev.report["n"] and save_confusion_png(ev.report, out / "confusion.png"):
        written.append(out / "confusion.png")
    return written


def evaluate(preds: str | os.PathLike, truth: str = "prefix", thresholds: list[str] | None = None,
             model_dir: str | None = None) -> Evaluation:
    """Read a predictions file and score it (see module doc)."""
    rows, labels = read_predictions(preds)
    bundle = None
    if model_dir is not None:
        from runtime.model.bundle import load_bundle

        bundle = load_bundle(model_dir)
        if bundle.labels != labels:
            raise FieldearError(f"--model {model_dir} has other labels than the predictions",
                                "pass the bundle that made the predictions")
        other = sorted({str(r["model_sha"]) for r in rows if r.get("model_sha")} - {bundle.sha256})
        if other:
            raise FieldearError(f"predictions were made by model {other[0][:12]}, --model is {bundle.short_sha}",
                                "pass the bundle that made the predictions, or --threshold instead of --model")
    ev = evaluate_rows(rows, labels, truth_function(truth), resolve_thresholds(labels, thresholds, bundle))
    if ev.report["n"] and sum(ev.unknown_truth.values()) == ev.report["n"]:
        raise FieldearError(f"{preds}: no truth label is a label of the model (truth: "
                            f"{', '.join(sorted(ev.unknown_truth))}; model: {', '.join(labels)})",
                            f"check --truth (now {truth!r}): prefix, folder or a CSV of path,label")
    if ev.unknown_truth:
        log.warning("truth labels not in the model: %s", ", ".join(sorted(ev.unknown_truth)))
    return ev
