"""The studio's train: ``fieldear train`` on a project's labels in a child process, one per project at a time.

The child is the command a person would type (``python -m runtime.cli train reports/train.csv --out
bundles/vN --seed S --time-budget T --progress ...``), so the studio's bundle is the CLI's bundle. Its state
(``reports/train.json``), console log (``reports/train-vN.log``) and progress lines (``reports/train-vN.progress
.jsonl``, JSON lines of train's log records with their time) stay in the project: a closed browser or a restarted
server finds the run again. Cancel stops the child's process group and removes the partial bundle.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from convert.options import DEFAULT_CANDIDATES, FAMILIES
from convert.studio.projects import BUNDLES_DIR, JOB_STATE_FILES, REPORTS_DIR, VERSION, Project
from runtime.errors import FieldearError
from runtime.web.jobs import ChildJob, tail

STATE_FILE = JOB_STATE_FILES["train"]

# train's log lines (convert/train.py, convert/families, convert/openset) -> (stage shown, what the groups are)
_STAGES = (
    (re.compile(r"^checked (\d+)/(\d+) files"), "checking files", "count"),
    (re.compile(r"^dataset: "), "checking files", None),
    (re.compile(r"^\d+ clips, \d+ labels; CV: "), "data checked", None),
    (re.compile(r"^candidate (\S+): about (\d+) s \((-?\d+) s of the budget left\)"), "cross-validation",
     "candidate"),
    (re.compile(r"^(?:embeddings|log-mel blocks)"), "computing embeddings", None),
    (re.compile(r"^negatives: "), "preparing negatives", None),
    (re.compile(r"^CV (.+): fold (\d+)/(\d+)$"), "cross-validation", "setting fold"),
    (re.compile(r"^CV .+: macro-F1 "), "cross-validation", None),
    (re.compile(r"^chosen: (\S+)"), "chosen", "chosen"),
    (re.compile(r"^int8 fold (\d+)/(\d+)"), "int8 check", "count"),
    (re.compile(r"^training \S+ on all \d+ clips"), "final training", "reset"),
    (re.compile(r"^validation stream (\d+)/(\d+)"), "stream calibration", "count"),
    (re.compile(r"^stream defaults: "), "writing the bundle", "reset"),
)


@dataclass(frozen=True)
class TrainSettings:
    """What the train page lets a user choose (the rest are train's defaults)."""

    seed: int = 0
    time_budget: float = 120.0
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    folds: int = 5
    cache_dir: Path | None = None  # the embedding cache (None: train's default, ~/.cache/fieldear)

    def check(self) -> None:
        if not self.time_budget > 0:
            raise FieldearError(f"the time budget must be more than 0 s (got {self.time_budget})")
        if self.folds < 2:
            raise FieldearError(f"at least 2 folds are needed (got {self.folds})")
        unknown = [c for c in self.candidates if c not in FAMILIES]
        if unknown or not self.candidates:
            raise FieldearError(f"unknown candidate(s) {', '.join(unknown) or '(none)'}",
                                f"choose from: {', '.join(FAMILIES)}")


def train_argv(manifest: Path, out: Path, settings: TrainSettings, progress: Path | None = None,
               background: Path | None = None, python: str = sys.executable) -> list[str]:
    """The ``fieldear train`` command line of a studio run (the same a person types, shown on the page)."""
    argv = [python, "-m", "runtime.cli", "train", str(manifest), "--out", str(out), "--seed", str(settings.seed),
            "--time-budget", f"{settings.time_budget:g}", "--candidates", ",".join(settings.candidates),
            "--folds", str(settings.folds)]
    if settings.cache_dir is not None:
        argv += ["--cache", str(settings.cache_dir)]
    if background is not None:
        argv += ["--background", str(background)]
    if progress is not None:
        argv += ["--progress", str(progress)]
    return argv


def next_version(bundles: Path) -> str:
    numbers = [int(m.group(1)) for p in bundles.glob("v*") if (m := VERSION.match(p.name))] if bundles.is_dir() else []
    return f"v{max(numbers, default=0) + 1}"


def read_progress(path: Path) -> list[dict]:
    """The progress file's records (a half-written last line is skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def progress_from(records: list[dict], now: float, time_budget: float) -> dict:
    """Stage, candidate, fold, the time budget left and an estimate of the time left from train's progress records.

    Both times come from train's line ``candidate X: about E s (B s of the budget left)``: ``budget_left_s`` is B
    less the time since (0 once used up: the first candidate still finishes), ``estimate_left_s`` is train's own
    estimate E of that candidate's cross-validation less the time since, None when it has run out (the run is
    slower than estimated) and after the choice (train estimates nothing after it): unknown, not 0.
    """
    out: dict = {"stage": "starting", "candidate": None, "setting": None, "chosen": None, "fold": None, "folds": None,
                 "budget_left_s": None, "estimate_s": None, "estimate_left_s": None, "detail": None, "warnings": []}
    budget_mark = None  # (time of the candidate line, its estimate in seconds, seconds of the budget left then)
    for rec in records:
        message = str(rec.get("message", ""))
        if rec.get("level") in ("WARNING", "ERROR", "CRITICAL"):
            out["warnings"].append(message)
        for pattern, stage, kind in _STAGES:
            m = pattern.match(message)
            if m is None:
                continue
            out.update(stage=stage, detail=message)
            if kind == "candidate":
                out.update(candidate=m.group(1), setting=None, fold=None, folds=None)
                budget_mark = (float(rec["t"]), float(m.group(2)), float(m.group(3)))
            elif kind == "setting fold":
                out.update(setting=m.group(1), fold=int(m.group(2)), folds=int(m.group(3)))
            elif kind == "count":
                out.update(fold=int(m.group(1)), folds=int(m.group(2)))
            elif kind == "chosen":
                out.update(chosen=m.group(1), fold=None, folds=None)
                budget_mark = None  # the budget is for comparing candidates; what follows is not limited by it
            elif kind == "reset":
                out.update(fold=None, folds=None)
            break
    if budget_mark is not None:
        since, estimate, budget_left = now - budget_mark[0], budget_mark[1], budget_mark[2]
        out["budget_left_s"] = round(max(0.0, budget_left - since), 1)
        out["estimate_s"] = estimate
        out["estimate_left_s"] = round(estimate - since, 1) if since < estimate else None
    out["time_budget_s"] = time_budget
    return out


class TrainJob:
    """The train run of one project (``popen``/``clock`` injectable for tests)."""

    def __init__(self, project: Project, clock: Callable[[], float] = time.time, popen: Callable = subprocess.Popen):
        self.project = project
        self.clock = clock
        self.job = ChildJob(project.path / REPORTS_DIR / STATE_FILE, "training", clock=clock, popen=popen,
                            succeeded=lambda state, code: code in (0, None)
                            and (Path(state["out"]) / "model.json").is_file())

    @property
    def bundles(self) -> Path:
        return self.project.path / BUNDLES_DIR

    def state(self) -> dict | None:
        """The latest run: running (with its progress), done, failed (with the end of its log) or cancelled."""
        state = self.job.read()
        if state is None:
            return None
        state["log_tail"] = tail(Path(state["log"]))
        if state["status"] == "running":
            state["progress"] = progress_from(read_progress(Path(state["progress_file"])), self.clock(),
                                              float(state["settings"]["time_budget"]))
        return state

    def start(self, settings: TrainSettings) -> dict:
        settings.check()
        running = self.job.running()
        if running is not None:
            raise FieldearError(f"project {self.project.name!r} is already training {running['version']} "
                                f"(started {running['started_utc']})",
                                "wait for it or cancel it; one training per project at a time")
        manifest, background = self.project.write_train_manifest()
        version = next_version(self.bundles)
        reports = self.project.path / REPORTS_DIR
        out = self.bundles / version
        progress = reports / f"train-{version}.progress.jsonl"
        progress.unlink(missing_ok=True)
        argv = train_argv(manifest, out, settings, progress, background)
        self.job.start(argv, reports / f"train-{version}.log", "wait for it or cancel it", version=version,
                       out=str(out), progress_file=str(progress),
                       settings={"seed": settings.seed, "time_budget": settings.time_budget,
                                 "candidates": list(settings.candidates), "folds": settings.folds})
        return self.state()

    def cancel(self) -> dict:
        """Stop the run and remove its partial bundle (and write_bundle's temporary folders)."""
        state = self.job.cancel()
        out = Path(state["out"])
        shutil.rmtree(out, ignore_errors=True)
        for tmp in out.parent.glob(f".{out.name}.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
        state["log_tail"] = tail(Path(state["log"]))
        return state
