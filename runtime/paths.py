"""Every default path fieldear uses, and the device's identity: named once, here.

Nothing here touches the disk at import time; the functions read the environment when called.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Callable

PACKAGE_DIR = Path(__file__).resolve().parent
MODELS_DIR = PACKAGE_DIR / "models"
DEFAULT_BUNDLE = MODELS_DIR / "default"  # the committed default model (ESC-10 + great tit)
BACKBONE_FILE = MODELS_DIR / "aisfx" / "backbone_int8.tflite"  # the committed int8 aisfx backbone
DEMO_DIR = PACKAGE_DIR / "demo"

# On a device run by systemd (`fieldear service install`)
SYSTEM_DATA_DIR = Path("/var/lib/fieldear")  # the log, clips, models/current
SYSTEM_CONFIG = Path("/etc/fieldear/fieldear.toml")
MACHINE_ID = Path("/etc/machine-id")

DB_NAME = "fieldear.db"  # the device log, inside the data dir
LOGGING_STATE_SUFFIX = ".logging"  # beside the log: {"suspended_since", "rows_lost", "error"} while writes fail
CLIPS_DIRNAME = "clips"  # saved event audio, beside the log
DATA_DIR_ENV = "FIELDEAR_DATA_DIR"


def user_data_dir() -> Path:
    """The data dir of a command run by hand: ``$FIELDEAR_DATA_DIR``, else ``~/.local/share/fieldear``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "fieldear"


def default_db_path() -> Path:
    """The log a command run by hand reads or writes when no ``--db`` is given."""
    return user_data_dir() / DB_NAME


def system_db_path() -> Path:
    return SYSTEM_DATA_DIR / DB_NAME


def clips_dir(db_path: Path) -> Path:
    return Path(db_path).parent / CLIPS_DIRNAME


def resolve_device_id(machine_id_path: Path = MACHINE_ID, hostname: Callable[[], str] = socket.gethostname) -> str:
    """A stable id: 'fe-' + 12 hex of sha256(/etc/machine-id) (never the raw machine id), else the hostname."""
    try:
        mid = machine_id_path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        mid = ""
    if mid:
        return "fe-" + hashlib.sha256(("fieldear:" + mid).encode()).hexdigest()[:12]
    name = (hostname() or "").strip().split(".")[0]
    return name or "fieldear"


def logging_state_path(db_path: Path) -> Path:
    """The writer's state file beside the log (``fieldear.db.logging``), read by `fieldear status`."""
    return Path(db_path).with_name(Path(db_path).name + LOGGING_STATE_SUFFIX)
