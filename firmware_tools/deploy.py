"""`fieldear deploy HOST`: ship a bundle and/or config to a device, switch atomically, restart, check, roll back.

Over the system's ssh and rsync (``--ssh-command``/``--rsync-command``; rsync uses the same remote shell)::

    1. local checks: the bundle loads (checksums), the config validates and fits the bundle's labels
    2. ssh HOST rm -rf STAGE && mkdir -p STAGE                 (STAGE = --remote-stage/<version>)
    3. rsync -a --delete -e SSH MODEL/ HOST:STAGE/model/ ; rsync -a -e SSH CONFIG HOST:STAGE/fieldear.toml
    4. ssh HOST sudo -n sh -c '...'  on the device: `fieldear config check` the new config/bundle (nothing changes
       if it fails); copy the bundle to DATA/models/<name>-<sha12> (a new versioned dir); remember the old
       target of DATA/models/current; switch it atomically (ln -sfn + mv -T); install the config the same way
       (the old one kept as .prev)
    5. ssh HOST sudo -n systemctl restart fieldear          (--restart-command)
    6. ssh HOST sudo -n fieldear status --json --config CONF (--check-command), up to --check-tries times:
       healthy = exit 0 and, when it reports one, the running model is the deployed bundle
    7. unhealthy: switch `current` (and the config) back, restart, check again; exit 1
       healthy: remove STAGE, prune old model versions (--keep)

``--dry-run`` prints every command (the rollback ones too) and runs none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from firmware_tools.shell import CommandFailed, run_command
from runtime.errors import FieldearError
from runtime.paths import SYSTEM_CONFIG, SYSTEM_DATA_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployOptions:
    host: str
    model: Path | None = None
    config: Path | None = None
    ssh_command: str = "ssh"
    rsync_command: str = "rsync"
    remote_fieldear: str = "/opt/fieldear/venv/bin/fieldear"
    remote_data_dir: str = str(SYSTEM_DATA_DIR)
    remote_config: str = str(SYSTEM_CONFIG)
    remote_stage: str = "/tmp/fieldear-deploy"
    restart_command: str | None = None  # default: systemctl restart fieldear
    check_command: str | None = None  # default: fieldear status --json --config CONF
    check_tries: int = 6
    check_interval: float = 5.0
    sudo: bool = True
    keep: int = 3


@dataclass
class DeployResult:
    host: str
    version: str
    model_sha: str | None = None
    previous_model: str | None = None
    deployed: bool = False
    rolled_back: bool = False
    healthy_after_rollback: bool | None = None
    check_output: str = ""
    commands: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)  # --dry-run: the commands in readable form, with comments

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Deployer:
    def __init__(self, opts: DeployOptions, run: Callable = subprocess.run, sleep: Callable[[float], None] = time.sleep,
                 dry_run: bool = False):
        self.o = opts
        self.run_proc = run
        self.sleep = sleep
        self.dry_run = dry_run
        self.bundle = None
        self.result: DeployResult | None = None
        self._shown: dict[str, str] = {}  # command line -> readable form for --dry-run

    # ------------------------------------------------------------ command building

    def ssh_argv(self, remote: str) -> list[str]:
        return [*shlex.split(self.o.ssh_command), self.o.host, remote]

    def device_shell(self, script: str, sudo: bool) -> list[str]:
        """Run a shell script on the device (as root with sudo -n: fails at once if sudo wants a password)."""
        prefix = "sudo -n " if sudo and self.o.sudo else ""
        argv = self.ssh_argv(f"{prefix}sh -c {shlex.quote(script)}")
        self._shown[shlex.join(argv)] = self.shown(script, sudo)
        return argv

    def shown(self, script: str, sudo: bool) -> str:
        """How --dry-run shows a device-side script: the ssh call, then the script itself, indented."""
        prefix = "sudo -n " if sudo and self.o.sudo else ""
        head = f"{shlex.join(self.ssh_argv('')[:-1])} {prefix}sh"
        if "\n" not in script:
            return f"{head} -c {shlex.quote(script)}"
        return head + " -s <<'SCRIPT'\n" + "\n".join("    " + ln for ln in script.splitlines()) + "\nSCRIPT"

    def rsync_argv(self, src: str, dest: str, delete: bool = False) -> list[str]:
        argv = [*shlex.split(self.o.rsync_command), "-a"]
        if delete:
            argv.append("--delete")
        return [*argv, "-e", self.o.ssh_command, src, f"{self.o.host}:{dest}"]

    @property
    def models_dir(self) -> str:
        return f"{self.o.remote_data_dir.rstrip('/')}/models"

    def restart_argv(self) -> list[str]:
        return self.device_shell(self.o.restart_command or "systemctl restart fieldear", sudo=True)

    def check_argv(self) -> list[str]:
        cmd = self.o.check_command or (f"{shlex.quote(self.o.remote_fieldear)} status --json --config "
                                       f"{shlex.quote(self.o.remote_config)}")
        return self.device_shell(cmd, sudo=True)

    def install_script(self, version: str, stage: str) -> str:
        q = shlex.quote
        m, conf = self.models_dir, self.o.remote_config
        lines = ["set -eu", f"M={q(m)}", 'mkdir -p "$M"']
        check_conf = f"{stage}/fieldear.toml" if self.o.config else conf
        check = f"{q(self.o.remote_fieldear)} -q config check {q(check_conf)}"
        if self.o.model:
            check += f" --model {q(stage + '/model')}"
        lines.append(f"{check} >&2")  # preflight on the device: nothing is changed when it fails
        if self.o.model:
            v = q(version)
            lines += [
                f'if [ ! -d "$M"/{v} ]; then rm -rf "$M"/.{v}.tmp; cp -R {q(stage + "/model")} "$M"/.{v}.tmp; '
                f'mv -T "$M"/.{v}.tmp "$M"/{v}; fi',
                'echo "previous_model=$(readlink "$M/current" || true)"',
                f'ln -sfn {v} "$M/.current.new"',
                'mv -T "$M/.current.new" "$M/current"',
            ]
        if self.o.config:
            lines += [
                f"mkdir -p {q(str(Path(conf).parent))}",
                f"if [ -f {q(conf)} ]; then cp -p {q(conf)} {q(conf + '.prev')}; echo previous_config=yes; "
                "else echo previous_config=; fi",
                f"cp {q(stage + '/fieldear.toml')} {q(conf + '.new')}",
                f"chmod 0640 {q(conf + '.new')}",
                f"chgrp fieldear {q(conf + '.new')} 2>/dev/null || true",
                f"mv -T {q(conf + '.new')} {q(conf)}",
            ]
        return "\n".join(lines)

    def rollback_script(self, previous_model: str | None, previous_config: bool) -> str:
        q = shlex.quote
        conf = self.o.remote_config
        lines = ["set -eu", f"M={q(self.models_dir)}"]
        if self.o.model:
            if previous_model:
                lines += [f'ln -sfn {q(previous_model)} "$M/.current.new"', 'mv -T "$M/.current.new" "$M/current"']
            else:
                lines.append('rm -f "$M/current"')
        if self.o.config:
            if previous_config:
                lines += [f"cp -p {q(conf + '.prev')} {q(conf + '.new')}", f"mv -T {q(conf + '.new')} {q(conf)}"]
            else:
                lines.append(f"rm -f {q(conf)}")
        return "\n".join(lines)

    def cleanup_script(self, stage: str, version: str | None, previous_model: str | None) -> str:
        q = shlex.quote
        lines = [f"rm -rf {q(stage)}"]
        if self.o.model:
            lines += [
                f"cd {q(self.models_dir)}",
                'cur=$(readlink current || true)', f"prev={q(previous_model or '')}", "n=0",
                'for d in $(ls -1t); do [ -d "$d" ] || continue; [ "$d" = current ] && continue; '
                '[ "$d" = "$cur" ] && continue; [ "$d" = "$prev" ] && continue; n=$((n+1)); '
                f'if [ "$n" -gt {int(self.o.keep)} ]; then rm -rf "$d"; fi; done',
            ]
        return "\n".join(lines)

    # ------------------------------------------------------------ running

    def _run(self, argv: list[str], what: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        text = shlex.join(argv)
        self.result.commands.append(text)
        if self.dry_run:
            self.result.plan.append(f"+ {self._shown.get(text, text)}")
            return subprocess.CompletedProcess(argv, 0, "", "")
        log.info("deploy: %s", what)
        log.debug("+ %s", text)
        untouched = what.startswith(("upload", "prepare", "install"))
        return run_command(argv, f"deploy: {what}", check=check, timeout=timeout, run=self.run_proc,
                           hint="nothing was switched on the device" if untouched else None,
                           missing_hint="install it, or pass --ssh-command / --rsync-command")

    def healthy(self, expect_sha: str | None, attempts: int) -> tuple[bool, str]:
        """Run the check command until it passes (and reports the expected model, when it reports one)."""
        last = ""
        for i in range(max(1, attempts)):
            if i:
                self.sleep(self.o.check_interval)
            proc = self._run(self.check_argv(), f"health check {i + 1}/{attempts}", check=False, timeout=120)
            if self.dry_run:
                return True, ""
            out = (proc.stdout or "").strip()
            last = out or (proc.stderr or "").strip()
            if proc.returncode != 0:
                last = f"exit {proc.returncode}: {_check_reason(out, proc.stderr or '')}"
                log.info("deploy: check %d: %s", i + 1, last)
                continue
            running_sha = _reported_model(out)
            if expect_sha and running_sha and running_sha != expect_sha:
                last = f"the device runs model {running_sha[:12]}, expected {expect_sha[:12]}"
                log.info("deploy: check %d: %s", i + 1, last)
                continue
            return True, out
        return False, last

    def deploy(self) -> DeployResult:
        from firmware_tools.service import bundle_version
        from runtime.config import check_labels, load_config
        from runtime.model.bundle import load_bundle

        o = self.o
        if o.model is None and o.config is None:
            raise FieldearError("deploy: nothing to deploy", "pass --model DIR and/or --config FILE")
        config = load_config(o.config) if o.config else None
        if o.model:
            self.bundle = load_bundle(o.model)
            if config is not None:
                check_labels(config, self.bundle.labels)
                expected = f"{self.models_dir}/current"
                if config.model.path is not None and str(config.model.path) != expected:
                    log.warning("deploy: %s has [model] path = %s; the deployed bundle is at %s", o.config,
                                config.model.path, expected)
            version = bundle_version(self.bundle)
        else:
            version = "config-" + hashlib.sha256(Path(o.config).read_bytes()).hexdigest()[:12]
        sha = self.bundle.sha256 if self.bundle else None
        self.result = res = DeployResult(host=o.host, version=version, model_sha=sha)
        stage = f"{o.remote_stage.rstrip('/')}/{version}"

        self._run(self.ssh_argv(f"rm -rf {shlex.quote(stage)} && mkdir -p {shlex.quote(stage)}"), "prepare the upload dir")
        if o.model:
            self._run(self.rsync_argv(f"{Path(o.model)}/", f"{stage}/model/", delete=True), f"upload bundle {version}")
        if o.config:
            self._run(self.rsync_argv(str(o.config), f"{stage}/fieldear.toml"), "upload config")
        proc = self._run(self.device_shell(self.install_script(version, stage), sudo=True),
                         "install on the device (preflight check, new version dir, atomic switch)")
        values = dict(line.split("=", 1) for line in (proc.stdout or "").splitlines() if "=" in line)
        res.previous_model = values.get("previous_model") or None
        previous_config = bool(values.get("previous_config"))
        if self.dry_run:
            res.previous_model = "$PREVIOUS_MODEL"
            previous_config = True

        ok, output = False, ""
        try:
            self._run(self.restart_argv(), "restart the service")
            ok, output = self.healthy(sha, o.check_tries)
        except CommandFailed as exc:
            output = str(exc)
        res.check_output = output
        if self.dry_run:
            res.plan.append("# if the health check fails:")
            self._rollback(res, previous_config)
            res.plan.append("# if it passes:")
            self._run(self.device_shell(self.cleanup_script(stage, version, res.previous_model), sudo=True), "clean up")
            res.deployed = True
            return res
        if ok:
            res.deployed = True
            self._run(self.device_shell(self.cleanup_script(stage, version, res.previous_model), sudo=True),
                      "clean up", check=False)
            log.info("deploy: %s is running %s and healthy", o.host, version)
            return res
        log.error("deploy: health check failed (%s); rolling back to %s", _check_reason(output, ""),
                  res.previous_model or "no model")
        self._rollback(res, previous_config)
        return res

    def _rollback(self, res: DeployResult, previous_config: bool) -> None:
        self._run(self.device_shell(self.rollback_script(res.previous_model, previous_config), sudo=True),
                  "roll back (switch current back)")
        res.rolled_back = True
        try:
            self._run(self.restart_argv(), "restart the service with the previous version")
            ok, _ = self.healthy(None, self.o.check_tries)
        except CommandFailed as exc:
            log.error("%s", exc)
            ok = False
        res.healthy_after_rollback = ok


def _check_reason(stdout: str, stderr: str) -> str:
    """One line saying why a check failed: `fieldear status --json`'s problems, else the last output line."""
    try:
        data = json.loads(stdout)
        if isinstance(data, dict) and data.get("problems"):
            return "; ".join(str(p) for p in data["problems"])
    except (json.JSONDecodeError, ValueError):
        pass
    lines = [ln for ln in (stderr.strip() + "\n" + stdout.strip()).splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _reported_model(output: str) -> str | None:
    """The running model's sha from `fieldear status --json` output (None when it does not say)."""
    try:
        data = json.loads(output)
    except (json.JSONDecodeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    run = data.get("run") or {}
    return run.get("model_sha") or (data.get("heartbeat") or {}).get("model_sha")


def cmd_deploy(args) -> int:
    opts = DeployOptions(
        host=args.host, model=Path(args.model) if args.model else None, config=Path(args.config) if args.config else None,
        ssh_command=args.ssh_command, rsync_command=args.rsync_command, remote_fieldear=args.remote_fieldear,
        remote_data_dir=args.remote_data_dir, remote_config=args.remote_config, remote_stage=args.remote_stage,
        restart_command=args.restart_command, check_command=args.check_command, check_tries=args.check_tries,
        check_interval=args.check_interval, sudo=not args.no_sudo, keep=args.keep)
    deployer = Deployer(opts, dry_run=args.dry_run)
    res = deployer.deploy()
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
    elif args.dry_run:
        print("\n".join(res.plan))
    elif res.deployed:
        print(f"deployed {res.version} to {res.host}: healthy" +
              (f" (previous: {res.previous_model})" if res.previous_model else ""))
    else:
        after = "healthy again" if res.healthy_after_rollback else "STILL UNHEALTHY: look at `journalctl -u fieldear`"
        print(f"deploy of {res.version} to {res.host} FAILED the health check; rolled back to "
              f"{res.previous_model or 'no model'}: {after}")
    return 0 if res.deployed else 1
