"""Render the systemd units from ``templates/fieldear.service.in`` (listen) and ``fieldear-web.service.in``
(`fieldear serve`, installed with ``service install --web``).

The template has ``@NAME@`` placeholders (``$MAINPID`` etc. stay for systemd); every placeholder
must be filled, so a template edit cannot silently ship a unit with ``@X@`` in it.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from firmware_tools.shell import run_command
from runtime.errors import ConfigError
from runtime.paths import SYSTEM_CONFIG, SYSTEM_DATA_DIR

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent / "templates" / "fieldear.service.in"
UNIT_NAME = "fieldear.service"
WEB_TEMPLATE = Path(__file__).resolve().parent / "templates" / "fieldear-web.service.in"
WEB_UNIT_NAME = "fieldear-web.service"
SERVICE_USER = "fieldear"
WEB_MEMORY_MAX = "150M"  # the page alone (measured: 33-39 MB RSS, bench_web)
# With the train extra the page's "retrain from reviews" runs `train --update` in the unit (measured: 856 MB RSS).
WEB_MEMORY_MAX_RETRAIN = "1200M"
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class UnitOptions:
    exec_path: Path  # the venv's `fieldear` script
    config_path: Path = SYSTEM_CONFIG
    data_dir: Path = SYSTEM_DATA_DIR
    device_id: str = "fieldear"
    user: str = SERVICE_USER
    dynamic_user: bool = False  # DynamicUser=yes + StateDirectory= instead of a created user
    network: bool = False  # MQTT configured: allow IP; otherwise only AF_UNIX and IPAddressDeny=any
    watchdog_sec: int = 30
    restart_sec: int = 10
    start_timeout_sec: int = 120
    web_host: str = "127.0.0.1"  # [web] host: loopback keeps the web unit off every other address
    web_port: int = 8080
    web_retrain: bool = False  # the train extra is installed: the page may retrain in its unit (more memory)
    metrics_loopback: bool = False  # [metrics] port without MQTT: loopback IP only (for the local scraper)


def train_extra_installed() -> bool:
    from runtime.web.retrain import missing_train_modules

    return not missing_train_modules()


def default_exec_path() -> Path:
    """The `fieldear` script beside the running interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "fieldear"
    if beside.exists():
        return beside
    found = shutil.which("fieldear")
    return Path(found) if found else beside


def watchdog_sec_for(stall_s: float) -> int:
    """WatchdogSec for a given [health] watchdog_stall_s: feeding happens about every second while
    audio flows, so the unit only needs slack for a slow block; 30 s or the stall time, whichever is less,
    bounded below by 10 s."""
    return int(max(10, min(30, math.ceil(stall_s))))


def options_from_config(config, exec_path: Path | None = None, config_path: Path | None = None,
                        user: str = SERVICE_USER, dynamic_user: bool = False,
                        web_retrain: bool | None = None) -> UnitOptions:
    return UnitOptions(
        exec_path=Path(exec_path) if exec_path else default_exec_path(),
        config_path=Path(config_path) if config_path else (Path(config.source).resolve() if config.source
                                                           else SYSTEM_CONFIG),
        data_dir=config.store.data_dir,
        device_id=config.device_id,
        user=user,
        dynamic_user=dynamic_user,
        network=config.mqtt.enabled,
        watchdog_sec=watchdog_sec_for(config.health.watchdog_stall_s),
        web_host=config.web.host,
        web_port=config.web.port,
        web_retrain=train_extra_installed() if web_retrain is None else web_retrain,
        metrics_loopback=config.metrics.port is not None,
    )


def _check_path(name: str, p: Path) -> str:
    text = str(p)
    if not p.is_absolute():
        raise ConfigError(f"unit: {name} must be an absolute path, got {text!r}")
    if any(c.isspace() or c in "\"'\\%$;" for c in text):
        raise ConfigError(f"unit: {name} {text!r} contains spaces or characters systemd would interpret",
                          "install fieldear and its data under plain paths such as /opt/fieldear and /var/lib/fieldear")
    return text


def _user_lines(opts: UnitOptions, web: bool) -> list[str]:
    if opts.dynamic_user:
        state = Path("/var/lib") / opts.data_dir.name
        if opts.data_dir != state:
            raise ConfigError(f"unit: with DynamicUser the data dir must be /var/lib/NAME, got {opts.data_dir}",
                              "set [store] data_dir = \"/var/lib/fieldear\" or use a dedicated user")
        # The web unit names the listener's dynamic user (named after its unit), so both share one uid.
        lines = ["DynamicUser=yes"] + ([f"User={SERVICE_USER}"] if web else ["SupplementaryGroups=audio"])
        return lines + [f"StateDirectory={opts.data_dir.name}", "StateDirectoryMode=0750"]
    return [f"User={opts.user}", f"Group={opts.user}"] + ([] if web else ["SupplementaryGroups=audio"])


def _fill(template: Path, values: dict) -> str:
    text = template.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise ConfigError(f"unit template {template} has unfilled placeholders: {', '.join(sorted(set(left)))}")
    return text


def render_web_unit(opts: UnitOptions, template: Path = WEB_TEMPLATE) -> str:
    """The text of ``fieldear-web.service``: `fieldear serve --config` with the listener's user and data dir.
    A loopback [web] host also keeps it off the network (IPAddressAllow=localhost)."""
    from runtime.web.settings import is_loopback

    if not _NAME_RE.match(opts.user):
        raise ConfigError(f"unit: invalid user name {opts.user!r}")
    exec_path = _check_path("ExecStart", opts.exec_path)
    data_dir = _check_path("data dir", opts.data_dir)
    config_path = _check_path("config", opts.config_path)
    under_home = any(str(p).startswith(("/home/", "/root/", "/run/user/")) for p in (opts.exec_path, opts.data_dir))
    if is_loopback(opts.web_host):
        network = ["# [web] host is loopback: no other address.", "IPAddressAllow=localhost", "IPAddressDeny=any"]
    else:
        network = [f"# [web] host = {opts.web_host}: reachable from the network (a password is required)."]
    host = re.sub(r"[^A-Za-z0-9._:-]", "_", opts.web_host)
    return _fill(template, {
        "DEVICE_ID": re.sub(r"[^A-Za-z0-9._:-]", "_", opts.device_id),
        "BIND": f"{host}:{int(opts.web_port)}",
        "EXEC": exec_path,
        "CONFIG": config_path,
        "DATA_DIR": data_dir,
        "RESTART": f"{int(opts.restart_sec)}s",
        "USER_LINES": "\n".join(_user_lines(opts, web=True)),
        "PROTECT_HOME": "read-only" if under_home else "yes",
        "NETWORK_LINES": "\n".join(network),
        "MEMORY_LINES": (f"# The train extra is installed: the page's retrain (train --update) runs here.\n"
                         f"MemoryMax={WEB_MEMORY_MAX_RETRAIN}" if opts.web_retrain else f"MemoryMax={WEB_MEMORY_MAX}"),
    })


def render_unit(opts: UnitOptions, template: Path = TEMPLATE) -> str:
    """The unit file text."""
    if not _NAME_RE.match(opts.user):
        raise ConfigError(f"unit: invalid user name {opts.user!r}")
    exec_path = _check_path("ExecStart", opts.exec_path)
    data_dir = _check_path("data dir", opts.data_dir)
    config_path = _check_path("config", opts.config_path)
    user_lines = _user_lines(opts, web=False)
    # ProtectHome=yes hides /home and /root; a venv there would not start, so make those read-only instead.
    under_home = any(str(p).startswith(("/home/", "/root/", "/run/user/")) for p in (opts.exec_path, opts.data_dir))
    if under_home:
        log.warning("fieldear or its data is under /home or /root; the unit uses ProtectHome=read-only "
                    "(install under /opt/fieldear for the full sandbox)")
    if opts.network:
        network_lines = ["RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"]
        after = " network-online.target\nWants=network-online.target"
    elif opts.metrics_loopback:
        network_lines = ["# No [mqtt] host; [metrics] port is served on loopback only.",
                         "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "IPAddressAllow=localhost",
                         "IPAddressDeny=any"]
        after = ""
    else:
        network_lines = ["# No [mqtt] host configured: no network at all.", "RestrictAddressFamilies=AF_UNIX",
                         "IPAddressDeny=any"]
        after = ""
    device_id = re.sub(r"[^A-Za-z0-9._:-]", "_", opts.device_id)
    values = {
        "DEVICE_ID": device_id,
        "AFTER": after,
        "EXEC": exec_path,
        "CONFIG": config_path,
        "DATA_DIR": data_dir,
        "START_TIMEOUT": f"{int(opts.start_timeout_sec)}s",
        "WATCHDOG": f"{int(opts.watchdog_sec)}s",
        "RESTART": f"{int(opts.restart_sec)}s",
        "USER_LINES": "\n".join(user_lines),
        "PROTECT_HOME": "read-only" if under_home else "yes",
        "NETWORK_LINES": "\n".join(network_lines),
    }
    return _fill(template, values)


def systemd_analyze_verify(unit_text: str, workdir: Path, name: str = UNIT_NAME,
                           analyze: str | None = None) -> tuple[int, str]:
    """Run ``systemd-analyze verify`` on the unit text (written to workdir). Returns (exit code, output).

    Raises ConfigError when systemd-analyze is not installed.
    """
    tool = analyze or shutil.which("systemd-analyze")
    if not tool:
        raise ConfigError("systemd-analyze not found", "apt-get install systemd")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text(unit_text, encoding="utf-8")
    proc = run_command([tool, "verify", "--man=no", str(path)], check=False, timeout=60)
    return proc.returncode, (proc.stdout + proc.stderr).strip()
