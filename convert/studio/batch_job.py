"""The studio's batch: ``fieldear batch FOLDER --out reports/batch-N.csv --model bundles/vK`` in a child process
(the same rows and columns as the CLI), its progress (rows written of files listed), then accuracy and per-label
metrics as ``fieldear evaluate`` computes them (``runtime.evaluate.clip_eval.evaluate``; truth from the file-name
prefix before ``_`` or from the folder names). One batch per project at a time; state and log in ``reports/``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from convert.studio.projects import BUNDLES_DIR, JOB_STATE_FILES, REPORTS_DIR, Project
from runtime.errors import FieldearError
from runtime.web.jobs import ChildJob, tail

STATE_FILE = JOB_STATE_FILES["batch"]
TRUTH_MODES = ("prefix", "folder")


@dataclass(frozen=True)
class BatchSettings:
    folder: Path  # searched recursively, as `fieldear batch` does
    version: str  # the project's bundle (bundles/<version>)
    truth: str = "prefix"  # how evaluate finds each file's true label
    jobs: int = 1

    def check(self, project: Project) -> Path:
        """The bundle directory; refuses a missing folder or bundle and an unknown truth mode."""
        if not Path(self.folder).is_dir():
            raise FieldearError(f"no folder {self.folder}", "give a folder on this computer (absolute path)")
        if self.truth not in TRUTH_MODES:
            raise FieldearError(f"unknown truth {self.truth!r}", f"choose one of: {', '.join(TRUTH_MODES)}")
        bundle = project.path / BUNDLES_DIR / self.version
        if "/" in self.version or not (bundle / "model.json").is_file():
            raise FieldearError(f"project {project.name!r} has no bundle {self.version!r}", "train it first")
        return bundle


def count_rows(path: Path) -> int:
    """Rows written so far (lines after the header; a half-written last line counts once it ends)."""
    try:
        with open(path, "rb") as f:
            return max(0, sum(1 for line in f if line.endswith(b"\n")) - 1)
    except OSError:
        return 0


class BatchJob:
    def __init__(self, project: Project, clock: Callable[[], float] = time.time, popen: Callable = subprocess.Popen):
        self.project = project
        self.job = ChildJob(project.path / REPORTS_DIR / STATE_FILE, "batch", clock=clock, popen=popen,
                            succeeded=lambda state, code: code in (0, 1, None) and Path(state["out"]).is_file())
        # `fieldear batch` exits 1 when some file failed: those are rows with an error, shown in the table

    @property
    def reports(self) -> Path:
        return self.project.path / REPORTS_DIR

    def start(self, settings: BatchSettings) -> dict:
        from runtime.predict.batch import iter_inputs

        bundle = settings.check(self.project)
        running = self.job.running()
        if running is not None:
            raise FieldearError(f"a batch is already running in project {self.project.name!r} "
                                f"(started {running['started_utc']})", "wait for it or cancel it")
        total = sum(1 for _ in iter_inputs([settings.folder]))
        if not total:
            raise FieldearError(f"no audio files under {settings.folder}")
        n = 1 + max((int(p.stem.split("-")[1]) for p in self.reports.glob("batch-*.csv")
                     if p.stem.split("-")[1].isdigit()), default=0)
        out = self.reports / f"batch-{n}.csv"
        argv = [sys.executable, "-m", "runtime.cli", "batch", str(Path(settings.folder).resolve()), "--out", str(out),
                "--model", str(bundle), "--jobs", str(settings.jobs)]
        self.job.start(argv, self.reports / f"batch-{n}.log", "wait for it or cancel it", number=n, out=str(out),
                       folder=str(settings.folder), version=settings.version, bundle=str(bundle),
                       truth=settings.truth, total=total)
        return self.state()

    def state(self) -> dict | None:
        """The latest batch: progress while running; when done, its rows and the evaluation."""
        state = self.job.read()
        if state is None:
            return None
        state["log_tail"] = tail(Path(state["log"]))
        state["done_files"] = count_rows(Path(state["out"]))
        if state["status"] == "done":
            state.update(self.results(state))
        return state

    def results(self, state: dict) -> dict:
        from runtime.evaluate.clip_eval import evaluate, read_predictions

        rows, labels = read_predictions(state["out"])
        try:
            evaluation = evaluate(state["out"], truth=state["truth"], model_dir=state["bundle"]).to_dict()
            problem = None
        except FieldearError as exc:  # e.g. no file name carries a label of the model
            evaluation, problem = None, exc.message + (f" ({exc.hint})" if exc.hint else "")
        return {"rows": rows, "labels": labels, "evaluation": evaluation, "evaluation_problem": problem}

    def cancel(self) -> dict:
        state = self.job.cancel()
        state["done_files"] = count_rows(Path(state["out"]))
        return state
