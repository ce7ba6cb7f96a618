"""fieldear batch --jobs N when a worker dies or a file never finishes (issue 17, item 2).

The faults are injected by the test: ``_worker_row`` is wrapped (workers are forked, so they run the wrapper)
to SIGKILL its own process on files named ``kill_me*`` and to hang on ``hang_me*``.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from runtime.predict import batch
from tests.conftest import EMULATED
from tests.predict.test_batch import _read_rows
from tests.predict.test_predict import model_dir, real_clip

pytestmark = pytest.mark.runtime

ORIGINAL_WORKER_ROW = batch._worker_row
GIVE_UP_S = 120  # the fault made the batch hang forever: fail instead


def faulty_worker_row(item: batch.Item) -> dict:
    name = os.path.basename(item.path)
    if name.startswith("kill_me"):
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    if name.startswith("hang_me"):
        time.sleep(3600)
    return ORIGINAL_WORKER_ROW(item)


@pytest.fixture
def faulty_workers(monkeypatch):
    monkeypatch.setattr(batch, "_worker_row", faulty_worker_row)

    def give_up(signum, frame):
        raise TimeoutError(f"batch still running after {GIVE_UP_S} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(GIVE_UP_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def folder_with(tmp_path: Path, esc10, bad_name: str) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    for i, cls in enumerate(("dog", "rain", "rooster", "dog")):
        shutil.copy(real_clip(esc10, cls, i % 2), root / f"{i}_{cls}.wav")
    shutil.copy(real_clip(esc10, "dog", 0), root / bad_name)
    return root


def test_a_worker_killed_mid_file_gives_an_error_row_and_the_batch_finishes(tmp_path, esc10, faulty_workers):
    root = folder_with(tmp_path, esc10, "kill_me.wav")
    out = tmp_path / "preds.csv"
    summary = batch.run_batch([str(root)], out, model_dir=str(model_dir()), jobs=2, threads=1)
    rows = {Path(r["path"]).name: r for r in _read_rows(out)}
    assert len(rows) == 5 and (summary.ok, summary.failed) == (4, 1)
    assert "worker process died" in rows["kill_me.wav"]["error"]
    assert all(r["label"] and not r["error"] for name, r in rows.items() if name != "kill_me.wav")


@pytest.mark.skipif(EMULATED, reason="under qemu every file takes longer than the 5 s per-file limit the test sets")
def test_a_file_over_the_time_limit_gives_an_error_row(tmp_path, esc10, faulty_workers):
    root = folder_with(tmp_path, esc10, "hang_me.wav")
    out = tmp_path / "preds.jsonl"
    t0 = time.monotonic()
    summary = batch.run_batch([str(root)], out, model_dir=str(model_dir()), jobs=2, threads=1, file_timeout_s=5)
    rows = {Path(r["path"]).name: r for r in _read_rows(out)}
    assert (summary.ok, summary.failed) == (4, 1) and time.monotonic() - t0 < 60
    assert rows["hang_me.wav"]["error"] == "timed out after 5 s"
