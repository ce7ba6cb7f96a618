"""`fieldear service install | uninstall | render`: the systemd service on the device.

install (as root): validate the config (and bundle), create the ``fieldear`` system user (unless
DynamicUser), create the data dir, install the config to /etc/fieldear/fieldear.toml (mode 0640, group
fieldear) and the bundle to ``<data_dir>/models/<name>-<sha12>`` with ``models/current`` pointing at it,
write the unit to /etc/systemd/system, ``systemctl daemon-reload``, ``enable --now``. ``--web`` also writes
``fieldear-web.service`` (`fieldear serve` with the same config and user) and enables it; a [web] host off
loopback without a [web] password_file is refused before anything is touched.
uninstall: ``disable --now``, remove the unit (and the web unit if installed), daemon-reload; ``--purge`` also
removes config, data and user.

Everything is done by a ``Plan`` of steps, so ``--dry-run`` prints exactly what would happen and tests can run
it against a temporary root directory (``--root``).
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from firmware_tools.shell import run_command
from firmware_tools.unit import (
    SERVICE_USER,
    UNIT_NAME,
    WEB_UNIT_NAME,
    UnitOptions,
    options_from_config,
    render_unit,
    render_web_unit,
    systemd_analyze_verify,
)
from runtime.errors import ConfigError, FieldearError
from runtime.paths import SYSTEM_CONFIG, SYSTEM_DATA_DIR

log = logging.getLogger(__name__)

EXAMPLE_CONFIG = Path(__file__).resolve().parent / "fieldear.example.toml"
UNIT_DIR = Path("/etc/systemd/system")


def bundle_version(bundle) -> str:
    """Directory name of an installed bundle: ``<name>-<sha12>`` (same content, same name)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", bundle.name).strip("-.") or "model"
    return f"{name}-{bundle.short_sha}"


def under(root: Path, path: Path) -> Path:
    """``path`` (absolute, on the device) inside ``root`` ('/' on the device itself)."""
    return root / Path(path).relative_to("/")


@dataclass
class Step:
    text: str  # what it does, as a shell-like line for --dry-run
    action: Callable[[], None]


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)

    def add(self, text: str, action: Callable[[], None]) -> None:
        self.steps.append(Step(text, action))

    def lines(self) -> list[str]:
        return [s.text for s in self.steps]

    def run(self) -> None:
        for step in self.steps:
            log.info("%s", step.text)
            step.action()


class Runner:
    """Runs system commands; raises FieldearError with the command's stderr when one fails."""

    def __call__(self, argv: list[str]) -> None:
        run_command(argv)


def require_root_and_systemd(euid: int | None = None, which: Callable[[str], str | None] = shutil.which,
                             booted: bool | None = None) -> str:
    """The systemctl path; clear errors when not root or when the machine has no systemd."""
    if (os.geteuid() if euid is None else euid) != 0:
        raise FieldearError("service install/uninstall must run as root", "run it with sudo, e.g. "
                            "`sudo /opt/fieldear/venv/bin/fieldear service install --config ...`")
    systemctl = which("systemctl")
    if systemctl is None:
        raise FieldearError("systemctl not found: this machine does not run systemd",
                            "use Raspberry Pi OS (Bookworm or Trixie), or run `fieldear listen --config ...` yourself")
    if booted is None:
        booted = Path("/run/systemd/system").is_dir()
    if not booted:
        raise FieldearError("systemd is not running on this machine (no /run/systemd/system)",
                            "install on the Pi itself, not in a container or chroot; or pass --root DIR to only write files")
    return systemctl


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _chown(path: Path, user: str, recursive: bool = False) -> None:
    if not _user_exists(user):
        return
    shutil.chown(path, user, user)
    if recursive:
        for p in path.rglob("*"):
            os.chown(p, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid, follow_symlinks=False)


def _checked_sources(config_file: Path | None, model_dir: Path | None, root: Path):
    """The config to install and the bundle to copy (if any), both checked: labels, and the [model] path the
    service will read."""
    from runtime.config import check_labels, load_config
    from runtime.model.bundle import load_bundle

    installed_config = under(root, SYSTEM_CONFIG)
    source_config = Path(config_file) if config_file else None
    if source_config is None:
        source_config = installed_config if installed_config.is_file() else EXAMPLE_CONFIG
    config = load_config(source_config)
    current = config.store.data_dir / "models" / "current"
    bundle = None
    if model_dir is not None:
        bundle = load_bundle(model_dir)
        check_labels(config, bundle.labels)
        if config.model.path != current:
            raise ConfigError(f"{source_config}: [model] path is {config.model.path}, but the service install puts "
                              f"the bundle at {current}", f'set [model] path = "{current}"')
    elif config.model.path is not None:
        model_path = config.model.path
        check_labels(config, load_bundle(under(root, model_path) if model_path.is_absolute() else model_path).labels)
    return source_config, installed_config, config, bundle


def check_web_config(config, where: str) -> None:
    """The web unit's rule, checked at install time: off loopback only with a password file."""
    from runtime.web.settings import is_loopback

    if not is_loopback(config.web.host) and config.web.password_file is None:
        raise ConfigError(f"{where}: [web] host = {config.web.host} needs [web] password_file",
                          "make one with `fieldear serve --hash-password > /etc/fieldear/web-password`, "
                          "or set host = \"127.0.0.1\"")


def _verified_unit(opts: UnitOptions, verify: bool, web: bool = False) -> str:
    unit_text = render_web_unit(opts) if web else render_unit(opts)
    if verify and shutil.which("systemd-analyze") and Path(opts.exec_path).exists():
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            rc, output = systemd_analyze_verify(unit_text, Path(tmp), name=WEB_UNIT_NAME if web else UNIT_NAME)
        if rc != 0:
            raise FieldearError(f"the rendered unit does not pass systemd-analyze verify: {output}")
        if output:
            log.warning("systemd-analyze verify: %s", output)
    return unit_text


def _add_user_step(plan: Plan, user: str, data_dir: Path, root: Path, run) -> None:
    cmd = ["useradd", "--system", "--user-group", "--home-dir", str(data_dir), "--no-create-home",
           "--shell", "/usr/sbin/nologin", "--groups", "audio", user]
    if root != Path("/"):
        cmd[1:1] = ["--root", str(root)]
    plan.add(" ".join(cmd), lambda: run(cmd))


def _add_data_dir_step(plan: Plan, data_dir: Path, root: Path, user: str, dynamic_user: bool) -> None:
    data_on_disk = under(root, data_dir)

    def make_data_dir() -> None:
        (data_on_disk / "models").mkdir(parents=True, exist_ok=True)
        data_on_disk.chmod(0o750)
        if not dynamic_user and root == Path("/"):  # in an image root the host's user table does not apply
            _chown(data_on_disk, user, recursive=True)

    plan.add(f"install -d -m 0750 -o {user} -g {user} {data_dir} {data_dir / 'models'}", make_data_dir)


def _add_bundle_step(plan: Plan, bundle, models: Path, root: Path) -> None:
    """Copy the bundle under models/<version> and switch models/current to it atomically."""
    version = bundle_version(bundle)
    target = under(root, models / version)

    def copy_bundle() -> None:
        if target.exists():
            log.info("bundle %s already installed", version)
        else:
            tmp = target.with_name(f".{version}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(bundle.path, tmp, symlinks=False)
            os.rename(tmp, target)
        link_tmp = under(root, models / ".current.new")
        if link_tmp.is_symlink() or link_tmp.exists():
            link_tmp.unlink()
        link_tmp.symlink_to(version)
        os.replace(link_tmp, under(root, models / "current"))

    plan.add(f"cp -a {bundle.path} {models / version} && ln -sfn {version} {models}/.current.new "
             f"&& mv -T {models}/.current.new {models}/current", copy_bundle)


def _add_config_step(plan: Plan, source_config: Path, installed_config: Path, user: str, root: Path,
                     dynamic_user: bool) -> None:
    def copy_config() -> None:
        installed_config.parent.mkdir(parents=True, exist_ok=True)
        if installed_config.exists():
            shutil.copy2(installed_config, installed_config.with_name(installed_config.name + ".bak"))
        tmp = installed_config.with_name(installed_config.name + ".new")
        shutil.copyfile(source_config, tmp)
        tmp.chmod(0o640)
        if not dynamic_user and root == Path("/") and _user_exists(user):
            shutil.chown(tmp, "root", user)
        os.replace(tmp, installed_config)

    plan.add(f"install -m 0640 -g {user} {source_config} {SYSTEM_CONFIG}", copy_config)


def _add_unit_step(plan: Plan, unit_text: str, root: Path, text: str, name: str = UNIT_NAME) -> None:
    unit_path = under(root, UNIT_DIR / name)

    def write_unit() -> None:
        unit_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = unit_path.with_name(name + ".new")
        tmp.write_text(unit_text, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, unit_path)

    plan.add(text, write_unit)


def install_plan(config_file: Path | None, model_dir: Path | None, exec_path: Path | None, root: Path = Path("/"),
                 user: str = SERVICE_USER, dynamic_user: bool = False, start: bool = True,
                 systemctl: str | None = "systemctl", run: Callable[[list[str]], None] | None = None,
                 verify: bool = True, web: bool = False) -> Plan:
    """The steps of ``service install``. ``systemctl`` None: only write files (for --root installs).
    ``web``: also the ``fieldear-web.service`` unit (`fieldear serve`)."""
    run = run or Runner()
    source_config, installed_config, config, bundle = _checked_sources(config_file, model_dir, root)
    data_dir = config.store.data_dir
    opts = options_from_config(config, exec_path=exec_path, config_path=SYSTEM_CONFIG, user=user,
                               dynamic_user=dynamic_user)
    unit_text = _verified_unit(opts, verify)
    web_text = None
    if web:
        check_web_config(config, str(source_config))
        web_text = _verified_unit(opts, verify, web=True)

    plan = Plan()
    if not dynamic_user and not _user_exists(user):
        _add_user_step(plan, user, data_dir, root, run)
    _add_data_dir_step(plan, data_dir, root, user, dynamic_user)
    if bundle is not None:
        _add_bundle_step(plan, bundle, data_dir / "models", root)
    if source_config.resolve() != installed_config.resolve():
        _add_config_step(plan, source_config, installed_config, user, root, dynamic_user)
    _add_unit_step(plan, unit_text, root, f"write {UNIT_DIR / UNIT_NAME} (Type=notify, WatchdogSec={opts.watchdog_sec}s, "
                   f"{'DynamicUser' if dynamic_user else 'User=' + user})")
    units = [UNIT_NAME]
    if web_text is not None:
        _add_unit_step(plan, web_text, root, f"write {UNIT_DIR / WEB_UNIT_NAME} (fieldear serve on "
                       f"{config.web.host}:{config.web.port})", name=WEB_UNIT_NAME)
        units.append(WEB_UNIT_NAME)
    if systemctl is not None:
        for argv in ([systemctl, "daemon-reload"],
                     [systemctl, "enable", "--now", *units] if start else [systemctl, "enable", *units]):
            plan.add(" ".join(argv), lambda argv=argv: run(argv))
    return plan


def uninstall_plan(root: Path = Path("/"), purge: bool = False, user: str = SERVICE_USER,
                   systemctl: str | None = "systemctl", run: Callable[[list[str]], None] | None = None,
                   data_dir: Path | None = None) -> Plan:
    run = run or Runner()
    plan = Plan()
    unit_path = under(root, UNIT_DIR / UNIT_NAME)
    web_path = under(root, UNIT_DIR / WEB_UNIT_NAME)
    units = [UNIT_NAME, WEB_UNIT_NAME] if web_path.exists() else [UNIT_NAME]
    if systemctl is not None:
        argv = [systemctl, "disable", "--now", *units]
        plan.add(" ".join(argv), lambda: run(argv))
    plan.add(f"rm -f {UNIT_DIR / UNIT_NAME}", lambda: unit_path.unlink(missing_ok=True))
    if web_path.exists():
        plan.add(f"rm -f {UNIT_DIR / WEB_UNIT_NAME}", lambda: web_path.unlink(missing_ok=True))
    if systemctl is not None:
        argv2 = [systemctl, "daemon-reload"]
        plan.add(" ".join(argv2), lambda: run(argv2))
    if purge:
        from runtime.config import load_config

        cfg = under(root, SYSTEM_CONFIG)
        data = data_dir or (load_config(cfg).store.data_dir if cfg.is_file() else SYSTEM_DATA_DIR)
        plan.add(f"rm -rf {data}", lambda: shutil.rmtree(under(root, data), ignore_errors=True))
        plan.add(f"rm -rf {SYSTEM_CONFIG.parent}", lambda: shutil.rmtree(cfg.parent, ignore_errors=True))
        if _user_exists(user) and root == Path("/"):
            argv3 = ["userdel", user]
            plan.add(" ".join(argv3), lambda: run(argv3))
    return plan


# ---------------------------------------------------------------- CLI handlers


def cmd_render(args) -> int:
    from runtime.config import default_config, load_config

    config = load_config(args.config) if args.config else default_config()
    opts = options_from_config(config, exec_path=Path(args.exec_path) if args.exec_path else None,
                               config_path=SYSTEM_CONFIG, dynamic_user=args.dynamic_user)
    print(render_web_unit(opts) if args.web else render_unit(opts), end="")
    return 0


def _systemctl_for(args) -> str | None:
    if args.root != "/":
        return None  # files only: an image or a test root, nothing to tell systemd
    if args.dry_run:
        return shutil.which("systemctl") or "systemctl"
    return require_root_and_systemd()


def cmd_install(args) -> int:
    plan = install_plan(Path(args.config) if args.config else None, Path(args.model) if args.model else None,
                        Path(args.exec_path) if args.exec_path else None, root=Path(args.root),
                        dynamic_user=args.dynamic_user, start=not args.no_start, systemctl=_systemctl_for(args),
                        web=args.web)
    units = "fieldear.service and fieldear-web.service" if args.web else "fieldear.service"
    return _execute(plan, args.dry_run, f"installed {units}" + ("" if args.no_start else " and started it"))


def cmd_uninstall(args) -> int:
    plan = uninstall_plan(root=Path(args.root), purge=args.purge, systemctl=_systemctl_for(args))
    return _execute(plan, args.dry_run, "removed fieldear.service" + (" and its data" if args.purge else ""))


def _execute(plan: Plan, dry_run: bool, done: str) -> int:
    if dry_run:
        for line in plan.lines():
            print(line)
        return 0
    plan.run()
    print(done)
    return 0
