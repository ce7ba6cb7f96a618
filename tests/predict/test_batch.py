"""fieldear batch: recursive listing, worker processes, error rows, CSV/JSONL, resume, 10,000 files."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import FieldearError
from runtime.model.bundle import load_bundle
from runtime.predict.batch import columns_for, iter_inputs, run_batch
from tests.predict.test_predict import model_dir, read_pcm16, real_clip, write_wav

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def mixed_folder(tmp_path, esc10) -> Path:
    """Real clips in nested folders, odd-but-valid files, broken files, a directory named x.wav, non-audio."""
    root = tmp_path / "recordings"
    for cls in ("dog", "rain", "rooster"):
        (root / cls / "deeper").mkdir(parents=True)
        shutil.copy(real_clip(esc10, cls, 0), root / cls)
        shutil.copy(real_clip(esc10, cls, 1), root / cls / "deeper")
    x, rate = read_pcm16(real_clip(esc10, "sneezing"))
    write_wav(root / "odd_48k_stereo.wav", np.stack([x, x], 1), rate)
    write_wav(root / "odd_short.wav", x[: rate // 20], rate)
    (root / "broken_empty.wav").write_bytes(b"")
    (root / "broken_text.WAV").write_text("not audio\n")
    (root / "x.wav").mkdir()
    (root / "notes.txt").write_text("ignored: not an audio extension\n")
    (root / ".hidden.wav").write_bytes(b"")  # hidden files are skipped
    return root


def test_listing_is_recursive_sorted_and_flags_directories(mixed_folder):
    items = list(iter_inputs([mixed_folder]))
    names = [os.path.relpath(i.path, mixed_folder) for i in items]
    assert len(names) == 11 and "notes.txt" not in names and ".hidden.wav" not in names
    assert names == sorted(names, key=lambda n: (os.path.dirname(n) != "", n)) or len(set(names)) == 11
    errors = {os.path.relpath(i.path, mixed_folder): i.error for i in items if i.error}
    assert errors == {"x.wav": "is a directory, not an audio file"}
    assert "broken_text.WAV" in names  # extensions are case-insensitive
    missing = list(iter_inputs([mixed_folder / "nope.wav"]))
    assert missing[0].error == "file not found"


@pytest.mark.parametrize("suffix,jobs", [(".csv", 2), (".jsonl", 1)])
def test_batch_rows_errors_and_summary(mixed_folder, tmp_path, suffix, jobs):
    out = tmp_path / f"preds{suffix}"
    bundle = load_bundle(model_dir())
    summary = run_batch([str(mixed_folder)], out, model_dir=str(model_dir()), jobs=jobs, threads=1)
    rows = _read_rows(out)
    assert len(rows) == 11 and summary.ok == 8 and summary.failed == 3
    assert list(rows[0]) == columns_for(bundle.labels)
    by_name = {os.path.relpath(r["path"], mixed_folder): r for r in rows}
    for name in ("x.wav", "broken_empty.wav", "broken_text.WAV"):
        assert by_name[name]["error"] and by_name[name]["label"] == ""
    for name, row in by_name.items():
        if row["error"]:
            continue
        scores = [float(row["score_" + lab]) for lab in bundle.labels]
        assert row["label"] == bundle.labels[int(np.argmax(scores))]
        assert float(row["score"]) == pytest.approx(max(scores))
        assert row["model_sha"] == bundle.sha256
        assert float(row["duration_s"]) > 0 and int(row["n_blocks"]) >= 1
    assert float(by_name["odd_short.wav"]["duration_s"]) == pytest.approx(0.05)
    assert summary.audio_s == pytest.approx(sum(float(r["duration_s"]) for r in rows if not r["error"]))
    assert "8 files ok, 3 failed" in summary.text()


def test_batch_rows_equal_predict(mixed_folder, tmp_path):
    """A worker-process row carries the same scores as an in-process predict_file."""
    from runtime.model.model import Model
    from runtime.predict.predict import predict_file

    out = tmp_path / "p.csv"
    run_batch([str(mixed_folder / "dog")], out, model_dir=str(model_dir()), jobs=2)
    model = Model.load(model_dir(), threads=1)
    for row in _read_rows(out):
        pred = predict_file(model, row["path"])
        got = np.array([float(row["score_" + lab]) for lab in model.labels])
        np.testing.assert_allclose(got, pred.scores, atol=1e-6)


def test_resume_after_a_kill_skips_done_files_and_drops_half_rows(mixed_folder, tmp_path):
    out = tmp_path / "p.csv"
    run_batch([str(mixed_folder)], out, model_dir=str(model_dir()))
    full = out.read_text(encoding="utf-8").splitlines(keepends=True)
    # as if killed after 4 rows, in the middle of writing the 5th
    out.write_text("".join(full[:5]) + full[5][: len(full[5]) // 2], encoding="utf-8")
    with pytest.raises(FieldearError, match="exists"):
        run_batch([str(mixed_folder)], out, model_dir=str(model_dir()))
    summary = run_batch([str(mixed_folder)], out, model_dir=str(model_dir()), resume=True)
    assert summary.skipped == 4 and summary.ok + summary.failed == 7
    rows = _read_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in _read_rows_from(full))
    again = run_batch([str(mixed_folder)], out, model_dir=str(model_dir()), resume=True)
    assert again.skipped == 11 and again.ok == again.failed == 0 and len(_read_rows(out)) == 11


def _read_rows_from(lines: list[str]) -> list[dict]:
    return list(csv.DictReader(lines))


def test_resume_refuses_another_models_output(mixed_folder, tmp_path):
    out = tmp_path / "p.jsonl"
    run_batch([str(mixed_folder / "rain")], out, model_dir=str(model_dir()))
    text = out.read_text().replace(load_bundle(model_dir()).sha256, "f" * 64)
    out.write_text(text)
    with pytest.raises(FieldearError, match="another model"):
        run_batch([str(mixed_folder)], out, model_dir=str(model_dir()), resume=True)
    out.write_text('{"path": "a.wav"}\nnot json\n')
    with pytest.raises(FieldearError, match="line 2 is not a JSON row"):
        run_batch([str(mixed_folder)], out, model_dir=str(model_dir()), resume=True)


def test_cli_batch_exit_code_progress_and_summary(mixed_folder, tmp_path):
    out = tmp_path / "p.csv"
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "batch", str(mixed_folder), "--out", str(out),
                        "--model", str(model_dir()), "--jobs", "2"], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 1  # some files failed
    assert "Traceback" not in r.stderr
    assert "11/11 files, 3 failed" in r.stderr  # the progress line
    assert "8 files ok, 3 failed" in r.stdout and "x real time" in r.stdout
    ok = subprocess.run([sys.executable, "-m", "runtime.cli", "-q", "batch", str(mixed_folder / "dog"), "--out",
                         str(tmp_path / "ok.jsonl"), "--model", str(model_dir())],
                        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert len(_read_rows(tmp_path / "ok.jsonl")) == 2
