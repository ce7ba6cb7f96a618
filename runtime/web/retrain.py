"""The page's "retrain from reviews, then switch" (docs/web.md, "Model").

Retrain: one ``fieldear train --update CURRENT --reviews LOG --out MODELS/<version>`` child process at a time
(the same command a person would type; it needs the ``train`` extra), its state in ``DATA/retrain/state.json``
and its output in ``DATA/retrain/<version>.log``, so a restarted server or a closed browser finds it again.
Switch: ``MODELS/current`` is pointed at another bundle of the models dir atomically (a new symlink renamed over
the old one, as ``fieldear deploy`` does), after the bundle loads; then the running listener is sent SIGHUP and
hot-swaps it between two chunks. Switching back to the previous bundle is the same action.

Standard library only (the server keeps numpy out); the bundle check runs in a short child process.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runtime.errors import FieldearError
from runtime.web.jobs import ChildJob, read_json, tail

log = logging.getLogger(__name__)

RETRAIN_DIRNAME = "retrain"  # in the data dir, beside the log
STATE_FILE = "state.json"
CURRENT_LINK = "current"  # DATA/models/current: the bundle the listener runs (fieldear deploy's layout)
VERSION_PREFIX = "reviewed-"
TRAIN_MODULES = ("tensorflow", "sklearn")  # what `train --update` imports (the train extra)


@dataclass(frozen=True)
class ModelPaths:
    """Where the page finds the running bundle, writes new ones and keeps the retrain state."""

    model: Path | None  # the config's [model] path (DATA/models/current on a deployed device)
    data_dir: Path  # the log's directory

    @property
    def models_dir(self) -> Path | None:
        """The directory of ``current``, when the config's model is such a link; else None (no switching)."""
        if self.model is not None and self.model.name == CURRENT_LINK and self.model.is_symlink():
            return self.model.parent
        return None

    @property
    def retrain_dir(self) -> Path:
        return self.data_dir / RETRAIN_DIRNAME

    @property
    def state_file(self) -> Path:
        return self.retrain_dir / STATE_FILE


def missing_train_modules(find_module: Callable = importlib.util.find_spec) -> list[str]:
    """What `train --update` needs that this Python lacks (empty: the train extra is installed)."""
    return [m for m in TRAIN_MODULES if find_module(m) is None]


def paths_for(settings) -> ModelPaths:
    return ModelPaths(model=Path(settings.model) if settings.model else None, data_dir=Path(settings.db).parent)


def bundle_summary(path: Path) -> dict | None:
    """Name, sha, creation time and the headline numbers of a bundle directory (model.json, report.json)."""
    meta = read_json(path / "model.json")
    if meta is None:
        return None
    report = read_json(path / "report.json") or {}
    update = report.get("update") or {}
    reviews = update.get("reviews") or {}
    return {"version": path.name, "name": meta.get("name"), "created_utc": meta.get("created_at"),
            "labels": meta.get("labels"), "cv_accuracy": (meta.get("metrics") or {}).get("cv_accuracy"),
            "held_out_comparison": reviews.get("held_out_comparison"),
            "reviews_in_training": reviews.get("clips_in_training"), "updated_from": (update.get("from") or {}).get("name")}


class ModelControl:
    """The retrain job and the model switch for one server. ``popen``: how the child starts; ``reload_listener``:
    what tells the running listener to reload (SIGHUP to the systemd unit's main process unless injected);
    ``check_bundle(path)``: raises FieldearError when a bundle does not load."""

    def __init__(self, settings, clock: Callable[[], float] = time.time, popen: Callable = subprocess.Popen,
                 reload_listener: Callable[[], str] | None = None, check_bundle: Callable[[Path], None] | None = None,
                 find_module: Callable = importlib.util.find_spec):
        self.settings = settings
        self.paths = paths_for(settings)
        self.clock = clock
        self.popen = popen
        self.reload_listener = reload_listener or (lambda: sighup_unit(settings.service))
        self.check_bundle = check_bundle or load_check
        self.find_module = find_module
        self.job = ChildJob(self.paths.state_file, "retrain", clock=clock, popen=popen,
                            succeeded=lambda state, code: code in (0, None) and (Path(state["out"]) / "model.json").is_file())

    # ----- what the page shows
    def overview(self) -> dict:
        models_dir = self.paths.models_dir
        running = self.paths.model.resolve() if self.paths.model is not None and self.paths.model.exists() else None
        current = bundle_summary(running) if running is not None else None
        bundles = []
        if models_dir is not None:
            for d in sorted(models_dir.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
                if d.name != CURRENT_LINK and not d.name.startswith(".") and d.is_dir() and (d / "model.json").is_file():
                    summary = bundle_summary(d)
                    if summary is not None:
                        summary["current"] = d.resolve() == running
                        bundles.append(summary)
        return {"model": str(self.paths.model) if self.paths.model else None, "current": current,
                "models_dir": str(models_dir) if models_dir else None, "switchable": models_dir is not None,
                "why_not_switchable": None if models_dir is not None else self._why_not_switchable(),
                "bundles": bundles, "retrain": self.state()}

    def _why_not_switchable(self) -> str:
        if self.paths.model is None:
            return "the config names no [model] path (the listener runs the built-in default)"
        return (f"the config's [model] path {self.paths.model} is not a models/{CURRENT_LINK} link "
                "(install bundles with `fieldear deploy` to switch from this page)")

    def state(self) -> dict | None:
        """The latest job: running, done (the new bundle exists) or failed (with the end of its log)."""
        state = self.job.read()
        if state is None:
            return None
        state["log_tail"] = tail(Path(state["log"]))
        if state["status"] == "done":
            state["bundle"] = bundle_summary(Path(state["out"]))
        return state

    # ----- actions
    def start_retrain(self) -> dict:
        state = self.job.running()
        if state is not None:
            raise FieldearError(f"a retrain is already running (started {state['started_utc']})",
                                "wait for it; the page shows its progress")
        if self.paths.model is None or not self.paths.model.exists():
            raise FieldearError("no model to retrain: the config names no [model] path",
                                "retraining refits the running bundle's head; set [model] path")
        missing = missing_train_modules(self.find_module)
        if missing:
            raise FieldearError(f"retraining on this machine needs the train extra (missing: {', '.join(missing)})",
                                "pip install 'fieldear[train]', or run `fieldear train --update MODEL --reviews LOG` "
                                "on a laptop and `fieldear deploy` the result")
        version = VERSION_PREFIX + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
        out_dir = (self.paths.models_dir or self.paths.data_dir / "models") / version
        source = self.paths.model.resolve()
        argv = [sys.executable, "-m", "runtime.cli", "train", "--update", str(source), "--reviews",
                str(self.settings.db), "--out", str(out_dir)]
        self.job.start(argv, self.paths.retrain_dir / f"{version}.log", "wait for it; the page shows its progress",
                       version=version, **{"from": str(source)}, out=str(out_dir))
        return self.state()

    def switch(self, version: str) -> dict:
        """Point models/current at ``version`` (a bundle directory of the models dir) and reload the listener."""
        models_dir = self.paths.models_dir
        if models_dir is None:
            raise FieldearError("cannot switch models here", self._why_not_switchable())
        if not version or "/" in version or version.startswith(".") or version == CURRENT_LINK:
            raise FieldearError(f"not a bundle of {models_dir}: {version!r}")
        target = models_dir / version
        if not (target / "model.json").is_file():
            raise FieldearError(f"not a bundle of {models_dir}: {version!r}")
        self.check_bundle(target)
        previous = os.readlink(self.paths.model)
        tmp = models_dir / f".{CURRENT_LINK}.new"
        tmp.unlink(missing_ok=True)
        os.symlink(version, tmp)
        os.replace(tmp, self.paths.model)
        log.info("switched %s: %s -> %s", self.paths.model, previous, version)
        try:
            how = self.reload_listener()
        except FieldearError as exc:
            return {"switched": version, "previous": previous, "reloaded": False, "reload": str(exc)}
        return {"switched": version, "previous": previous, "reloaded": True, "reload": how}


def load_check(path: Path) -> None:
    """The runtime's own bundle check (load_bundle refuses mismatched parts), in a child: numpy stays out of here."""
    code = "import sys; from runtime.model.bundle import load_bundle; load_bundle(sys.argv[1])"
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["it does not load"])[-1]
        raise FieldearError(f"refusing to switch to {path.name}: {last}")


def sighup_unit(service: str, run: Callable = subprocess.run) -> str:
    """SIGHUP to the main process of the listen unit (what `systemctl reload` does; the page's user owns it)."""
    try:
        r = run(["systemctl", "show", "--property", "MainPID", "--value", service], capture_output=True, text=True,
                timeout=10)
        pid = int((r.stdout or "0").strip() or 0)
    except (OSError, ValueError, subprocess.SubprocessError):
        pid = 0
    if pid <= 0:
        raise FieldearError(f"the listener ({service}.service) is not running under systemd",
                            f"restart it, or `sudo systemctl reload {service}` when it runs")
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise FieldearError(f"cannot signal the listener (pid {pid}): {exc.strerror}",
                            f"`sudo systemctl reload {service}`") from None
    return f"SIGHUP sent to {service}.service (pid {pid})"
