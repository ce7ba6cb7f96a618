"""The studio's deploy: a project bundle as a download (``<project>-<version>.tar.gz``, the bundle folder inside),
or sent to a device by ``firmware_tools.deploy.Deployer`` — the code of ``fieldear deploy HOST --model BUNDLE``."""

from __future__ import annotations

import io
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import FieldearError

log = logging.getLogger(__name__)


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


def deploy_bundle(bundle: Path, settings: DeploySettings, run=None) -> dict:
    """Deploy ``bundle`` with fieldear deploy's Deployer; its result (deployed, rolled back, commands or plan)."""
    import subprocess

    from firmware_tools.deploy import Deployer, DeployOptions

    settings.check()
    opts = DeployOptions(host=settings.host.strip(), model=Path(bundle), ssh_command=settings.ssh_command,
                         rsync_command=settings.rsync_command, **settings.extra)
    result = Deployer(opts, run=run or subprocess.run, dry_run=settings.dry_run).deploy()
    log.info("deploy of %s to %s: %s", bundle, settings.host,
             "dry run" if settings.dry_run else ("healthy" if result.deployed else "rolled back"))
    return result.as_dict()
