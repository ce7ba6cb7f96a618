"""The studio's deploy: a project bundle as a download (``<project>-<version>.tar.gz``, the bundle folder inside),
or sent to a device by ``fieldear deploy HOST --model BUNDLE`` (``firmware_tools.deploy.Deployer``: checks, rsync,
atomic switch, restart, health check, rollback) run as a child job whose state and log the page follows."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from convert.studio.projects import BUNDLES_DIR, JOB_STATE_FILES, REPORTS_DIR, Project
from runtime.errors import FieldearError
from runtime.web.jobs import ChildJob, tail

log = logging.getLogger(__name__)

DEPLOY_LOG_LINES = 400  # a dry run's plan is a few dozen lines: the page shows the whole log


def bundle_archive(bundle: Path, name: str) -> bytes:
    """The bundle folder as a gzipped tar, its files under ``name/`` (hidden files left out)."""
    from runtime.model.bundle import load_bundle

    load_bundle(bundle)  # never hand out a bundle the runtime would refuse
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for part in sorted(Path(bundle).iterdir()):
            if part.is_file() and not part.name.startswith("."):
                tar.add(part, arcname=f"{name}/{part.name}")
    return buf.getvalue()


@dataclass(frozen=True)
class DeploySettings:
    """What the deploy form takes; the rest are `fieldear deploy`'s defaults."""

    host: str
    dry_run: bool = False
    ssh_command: str = "ssh"
    rsync_command: str = "rsync"
    extra: dict = field(default_factory=dict)  # other DeployOptions fields (tests: restart/check commands)

    def check(self) -> None:
        host = self.host.strip()
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise FieldearError(f"not a device address: {self.host!r}", "e.g. pi@fieldear-01.local")


def deploy_argv(bundle: Path, settings: DeploySettings, python: str = sys.executable) -> list[str]:
    """The ``fieldear deploy HOST --model BUNDLE`` command line of a studio deploy (what a person would type)."""
    settings.check()
    argv = [python, "-m", "runtime.cli", "deploy", settings.host.strip(), "--model", str(bundle),
            "--ssh-command", settings.ssh_command, "--rsync-command", settings.rsync_command]
    for key, value in settings.extra.items():  # DeployOptions fields -> deploy's flags (sudo=False: --no-sudo)
        if key == "sudo":
            argv += [] if value else ["--no-sudo"]
        elif value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    if settings.dry_run:
        argv.append("--dry-run")
    return argv


def _deployed(state: dict, code: int | None) -> bool:
    """Done when `fieldear deploy` exited 0 (deployed and healthy, or a dry run's plan printed); when another
    server started it (no exit status known), when its output says so."""
    if code is not None:
        return code == 0
    lines = tail(Path(state["log"]), DEPLOY_LOG_LINES)
    if state.get("dry_run"):
        return "# if it passes:" in lines
    return bool(lines) and lines[-1].startswith("deployed ")


class DeployJob:
    """The deploy of one project's bundle as a child ``fieldear deploy`` (state reports/deploy.json, log
    reports/deploy-N.log), one at a time, followed by the page as the train and batch jobs are. No cancel: a deploy
    stopped half way could leave the device between versions; deploy rolls back by itself when unhealthy."""

    def __init__(self, project: Project, clock: Callable[[], float] = time.time, popen: Callable = subprocess.Popen):
        self.project = project
        self.job = ChildJob(project.path / REPORTS_DIR / JOB_STATE_FILES["deploy"], "deploy", clock=clock,
                            popen=popen, succeeded=_deployed)

    @property
    def reports(self) -> Path:
        return self.project.path / REPORTS_DIR

    def start(self, version: str, settings: DeploySettings) -> dict:
        bundle = self.project.path / BUNDLES_DIR / version
        if version not in self.project.versions():
            raise FieldearError(f"project {self.project.name!r} has no bundle {version!r}", "train it first")
        argv = deploy_argv(bundle, settings)
        running = self.job.running()
        if running is not None:
            raise FieldearError(f"a deploy of {running['version']} to {running['host']} is already running "
                                f"(started {running['started_utc']})", "wait for it")
        n = 1 + max((int(p.stem.split("-")[1]) for p in self.reports.glob("deploy-*.log")
                     if p.stem.split("-")[1].isdigit()), default=0)
        self.job.start(argv, self.reports / f"deploy-{n}.log", "wait for it", number=n, version=version,
                       host=settings.host.strip(), dry_run=settings.dry_run)
        log.info("deploy %d of %s to %s started%s", n, version, settings.host, " (dry run)" if settings.dry_run else "")
        return self.state()

    def state(self) -> dict | None:
        """The latest deploy: running, done (deployed and healthy, or the dry run's plan) or failed (rolled back,
        or stopped by an error), with its log (every step deploy logs, and its plan or verdict)."""
        state = self.job.read()
        if state is None:
            return None
        state["log_tail"] = tail(Path(state["log"]), DEPLOY_LOG_LINES)
        return state
