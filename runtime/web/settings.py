"""What `fieldear serve` needs, resolved once from the config and the command line (``WebSettings``).

The rule: the server binds 127.0.0.1 unless told otherwise, and any non-loopback host needs a password file,
or ``settings_for`` refuses with one line.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import ConfigError
from runtime.paths import clips_dir

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


@dataclass(frozen=True)
class WebSettings:
    db: Path | None  # None: no device log (`serve --projects` alone: the studio only)
    host: str = "127.0.0.1"
    port: int = 8080
    password_hash: str | None = None  # None: no login (loopback only)
    model: Path | None = None  # the bundle whose frontend draws spectrograms (None: the default bundle)
    service: str = "fieldear"  # the listen unit the live page asks systemd about
    every_s: float | None = None  # [health] every_s (when the heartbeat is late)
    reviewer: str = "web"  # the reviewer name when the page sends none
    projects: Path | None = None  # the studio's projects root (None: no studio pages)

    @property
    def clips_dir(self) -> Path | None:
        return clips_dir(self.db) if self.db is not None else None


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def settings_for(config, db: Path | None = None, host: str | None = None, port: int | None = None,
                 password_file: Path | None = None, service: str = "fieldear", projects: Path | None = None,
                 need_db: bool = True) -> WebSettings:
    """Command-line values (None: not given) over the config's [web] and [store]. ``need_db=False`` (the studio
    alone): the log is None unless ``db`` is given or the config's log exists."""
    from runtime.web.passwords import read_hash_file

    web = config.web
    host = host or web.host
    port = int(port or web.port)
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port: expected 1..65535, got {port}")
    password_file = Path(password_file) if password_file else web.password_file
    if not is_loopback(host) and password_file is None:
        raise ConfigError(f"refusing to serve on {host} without a password",
                          "pass --password-file FILE (made by `fieldear serve --hash-password`), or use --host 127.0.0.1")
    password_hash = read_hash_file(password_file) if password_file is not None else None
    if db is None:
        db = config.store.db_path
        if not need_db and not Path(db).is_file():
            db = None
    projects = Path(projects).expanduser() if projects else web.projects
    return WebSettings(db=Path(db) if db else None, host=host, port=port,
                       password_hash=password_hash, model=config.model.path, service=service,
                       every_s=config.health.every_s, projects=projects)
