"""fieldear evaluate: truth modes, thresholds and `unknown`, rows without truth, failed rows, report files.

Predictions files are written here by hand so that every expected number can be counted directly.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.errors import FieldearError
from runtime.evaluate.clip_eval import (
    evaluate,
    parse_thresholds,
    report_text,
    truth_from_name,
    write_report,
)
from runtime.predict.batch import columns_for

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["cat", "dog", "owl"]


def _row(path: str, scores: list[float] | None, error: str = "", sha: str = "s" * 64) -> dict:
    row = {c: "" for c in columns_for(LABELS)}
    row.update(path=path, error=error, model_sha=sha)
    if scores is not None:
        best = max(range(len(LABELS)), key=lambda i: scores[i])
        row.update(label=LABELS[best], score=scores[best], duration_s=5.0, n_blocks=3)
        row.update({f"score_{lab}": s for lab, s in zip(LABELS, scores)})
    return row


def _write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns_for(LABELS))
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# truth (from the prefix) / scores: 4 cats (3 right, one called dog), 3 dogs (2 right, one owl at 0.4),
# 1 owl right, one file without an underscore (no truth), one failed row
ROWS = [
    _row("a/cat_1.wav", [0.9, 0.05, 0.05]),
    _row("a/cat_2.wav", [0.7, 0.2, 0.1]),
    _row("b/cat_3.wav", [0.55, 0.45, 0.0]),
    _row("b/cat_4.wav", [0.3, 0.6, 0.1]),
    _row("b/dog_1.wav", [0.1, 0.8, 0.1]),
    _row("c/dog_2.wav", [0.2, 0.5, 0.3]),
    _row("c/dog_3.wav", [0.3, 0.3, 0.4]),
    _row("c/owl_1.wav", [0.0, 0.1, 0.9]),
    _row("c/mystery.wav", [0.2, 0.2, 0.6]),
    _row("c/cat_9.wav", None, error="not a WAV file (no RIFF header)"),
]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_prefix_truth_metrics_counted_by_hand(tmp_path, suffix):
    ev = evaluate(_write(tmp_path / f"p{suffix}", ROWS), truth="prefix")
    r = ev.report
    assert r["n"] == 8 and r["accuracy"] == pytest.approx(6 / 8)
    cat, dog, owl = (r["per_label"][x] for x in LABELS)
    assert (cat["support"], dog["support"], owl["support"]) == (4, 3, 1)
    assert cat["precision"] == 1.0 and cat["recall"] == pytest.approx(3 / 4)
    assert dog["precision"] == pytest.approx(2 / 3) and dog["recall"] == pytest.approx(2 / 3)
    assert owl["precision"] == pytest.approx(1 / 2) and owl["recall"] == 1.0
    f1 = {"cat": 2 * 1 * 0.75 / 1.75, "dog": 2 / 3, "owl": 2 * 0.5 / 1.5}
    assert r["macro"]["f1"] == pytest.approx(sum(f1.values()) / 3)
    assert r["weighted"]["f1"] == pytest.approx((4 * f1["cat"] + 3 * f1["dog"] + f1["owl"]) / 8)
    assert r["confusion"]["matrix"] == [[3, 1, 0], [0, 2, 1], [0, 0, 1]]
    assert ev.no_truth == [{"path": "c/mystery.wav", "predicted": "owl", "score": 0.6}]
    assert ev.failed == [{"path": "c/cat_9.wav", "error": "not a WAV file (no RIFF header)"}]


def test_thresholds_give_unknown(tmp_path):
    preds = _write(tmp_path / "p.csv", ROWS)
    ev = evaluate(preds, truth="prefix", thresholds=["0.5", "owl=0.95"])
    # below 0.5: dog_3 (owl 0.4); owl below 0.95: owl_1 (0.9), dog_3 -> unknown; cat_4 stays dog (0.6)
    assert ev.report["confusion"]["cols"] == LABELS + ["unknown"]
    assert ev.report["confusion"]["matrix"] == [[3, 1, 0, 0], [0, 2, 0, 1], [0, 0, 0, 1]]
    assert ev.report["accuracy"] == pytest.approx(5 / 8)
    assert ev.no_truth[0]["predicted"] == "unknown"
    text = report_text(ev, "prefix")
    assert "owl=0.95" in text and "unknown" in text


def test_threshold_parsing_errors():
    assert parse_thresholds(["0.3", "dog=0.7,cat=0.1"], LABELS) == (0.3, {"dog": 0.7, "cat": 0.1})
    for bad in (["1.5"], ["emu=0.5"], ["dog=x"]):
        with pytest.raises(FieldearError):
            parse_thresholds(bad, LABELS)


def test_folder_and_csv_truth(tmp_path):
    rows = [_row("rec/cat/x_1.wav", [0.9, 0.1, 0.0]), _row("rec/owl/y.wav", [0.1, 0.8, 0.1]),
            _row("z.wav", [0.1, 0.1, 0.8])]
    preds = _write(tmp_path / "p.csv", rows)
    ev = evaluate(preds, truth="folder")
    assert ev.report["n"] == 2 and ev.report["accuracy"] == pytest.approx(1 / 2)
    assert ev.unknown_truth == {} and [d["path"] for d in ev.no_truth] == ["z.wav"]  # no parent folder
    truth = tmp_path / "truth.csv"
    truth.write_text("path,label\nrec/cat/x_1.wav,cat\ny.wav,owl\n", encoding="utf-8")
    ev = evaluate(preds, truth=str(truth))
    assert ev.report["n"] == 2  # y.wav matched by file name; z.wav has no truth and is listed
    assert [d["path"] for d in ev.no_truth] == ["z.wav"]
    with pytest.raises(FieldearError, match="truth file not found"):
        evaluate(preds, truth=str(tmp_path / "nope.csv"))


def test_truth_labels_the_model_lacks_are_scored_and_named(tmp_path):
    rows = [_row("esc10_1-1-A.wav", [0.9, 0.1, 0.0]), _row("cat_2.wav", [0.9, 0.1, 0.0])]
    ev = evaluate(_write(tmp_path / "p.csv", rows), truth="prefix")
    assert ev.unknown_truth == {"esc10": 1} and ev.report["n"] == 2 and ev.report["accuracy"] == 0.5
    assert "try --truth folder" in report_text(ev, "prefix")


def test_truth_from_name():
    assert truth_from_name("x/dog_01.wav", "prefix") == "dog"
    assert truth_from_name("x/dog.wav", "prefix") is None
    assert truth_from_name("x/_a.wav", "prefix") is None
    assert truth_from_name("x/dog/a.wav", "folder") == "dog"


def test_report_files(tmp_path):
    ev = evaluate(_write(tmp_path / "p.csv", ROWS), truth="prefix")
    written = {p.name for p in write_report(ev, report_text(ev, "prefix"), tmp_path / "rep")}
    assert {"report.txt", "report.json", "confusion.json", "no_truth.csv", "failed.csv"} <= written
    try:
        import matplotlib  # noqa: F401

        assert "confusion.png" in written
    except ImportError:
        assert "confusion.png" not in written
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["n_rows"] == 10 and data["n_evaluated"] == 8 and len(data["failed"]) == 1
    assert json.loads((tmp_path / "rep" / "confusion.json").read_text())["matrix"] == ev.report["confusion"]["matrix"]


def test_bundle_thresholds_and_sha_check(tmp_path):
    """--model: thresholds come from the bundle that made the rows; another bundle is refused."""
    from runtime.model.bundle import load_bundle
    from tests.predict.test_predict import model_dir

    bundle = load_bundle(model_dir())
    labels = bundle.labels
    top = labels[0]
    low = max(0.0, bundle.threshold(top, 0.5) - 0.01)
    row = {c: "" for c in columns_for(labels)}
    row.update(path=f"{top}_1.wav", label=top, score=low, model_sha=bundle.sha256, duration_s=1, n_blocks=1)
    row.update({f"score_{lab}": (low if lab == top else 0.0) for lab in labels})
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps(row) + "\n")
    ev = evaluate(preds, truth="prefix", model_dir=str(model_dir()))
    expected = "unknown" if bundle.threshold(top, 0.0) > low else top
    cols = ev.report["confusion"]["cols"]
    matrix = ev.report["confusion"]["matrix"]
    assert cols[[r[c] for r in matrix for c in range(len(cols))].index(1) % len(cols)] == expected
    row["model_sha"] = "0" * 64
    preds.write_text(json.dumps(row) + "\n")
    with pytest.raises(FieldearError, match="predictions were made by model"):
        evaluate(preds, truth="prefix", model_dir=str(model_dir()))


def test_cli_evaluate(tmp_path):
    preds = _write(tmp_path / "p.csv", ROWS)
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "evaluate", str(preds), "--out", str(tmp_path / "rep"),
                        "--threshold", "0.5"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and "c/mystery.wav" in r.stdout and "c/cat_9.wav" in r.stdout
    assert (tmp_path / "rep" / "report.txt").read_text().strip() in r.stdout
    bad = subprocess.run([sys.executable, "-m", "runtime.cli", "evaluate", str(tmp_path / "none.csv")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "not found" in bad.stderr


def test_cli_evaluate_stream_options_need_db():
    from runtime.cli import main as cli

    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--tolerance", "x"])
    assert cli.main(["evaluate", "--annotations", "a.csv"]) == 2  # needs --db


def test_model_labels_absent_from_data_do_not_lower_macro_averages():
    from runtime.evaluate.clip_eval import evaluate_rows

    labels = ["dog", "rooster", "great_tit"]  # the data has no great tit and none is predicted
    rows = [{"path": f"{t}_{i}.wav", **{f"score_{lab}": float(lab == p) for lab in labels}}
            for i, (t, p) in enumerate([("dog", "dog"), ("dog", "dog"), ("rooster", "rooster"), ("rooster", "dog")])]
    ev = evaluate_rows(rows, labels, lambda path: truth_from_name(path, "prefix"), {})
    assert ev.report["labels"] == ["dog", "rooster"]
    # dog: P 2/3 R 1 F1 0.8; rooster: P 1 R 0.5 F1 2/3 -> macro F1 0.7333 (not 0.4889 with a zero for great_tit)
    assert ev.report["macro"]["f1"] == pytest.approx((0.8 + 2 / 3) / 2)
