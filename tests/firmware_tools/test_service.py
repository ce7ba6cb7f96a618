"""firmware_tools.service: install/uninstall plans against a temporary root; clear errors without root/systemd."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_tools.service import (
    install_plan,
    require_root_and_systemd,
    uninstall_plan,
)
from firmware_tools.unit import UnitOptions, render_unit
from runtime.errors import ConfigError, FieldearError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "firmware_tools" / "fieldear.example.toml"
EXE = Path("/opt/fieldear/venv/bin/fieldear")


class Recorder:
    """Records the system commands (useradd, systemctl) a plan runs instead of changing this machine."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, argv):
        self.calls.append(list(argv))


def config_file(tmp_path: Path, data_dir: Path, model: str | None = None, mqtt: bool = False) -> Path:
    p = tmp_path / "in.toml"
    text = f'[device]\nid = "field-03"\n[store]\ndata_dir = "{data_dir}"\n'
    if model:
        text += f'[model]\npath = "{model}"\n'
    if mqtt:
        text += '[mqtt]\nhost = "broker.example.org"\n'
    p.write_text(text)
    return p


def test_not_root_no_systemctl_no_systemd_are_clear_errors():
    with pytest.raises(FieldearError, match="must run as root") as e:
        require_root_and_systemd(euid=1000)
    assert "sudo" in e.value.hint
    with pytest.raises(FieldearError, match="systemctl not found"):
        require_root_and_systemd(euid=0, which=lambda name: None)
    with pytest.raises(FieldearError, match="systemd is not running"):
        require_root_and_systemd(euid=0, which=lambda name: "/usr/bin/systemctl", booted=False)
    assert require_root_and_systemd(euid=0, which=lambda name: "/usr/bin/systemctl", booted=True) == "/usr/bin/systemctl"


def test_install_writes_files_and_runs_systemctl(tmp_path):
    root = tmp_path / "root"
    cfg = config_file(tmp_path, Path("/var/lib/fieldear"))
    rec = Recorder()
    plan = install_plan(cfg, None, EXE, root=root, run=rec, verify=False)
    plan.run()
    unit = root / "etc/systemd/system/fieldear.service"
    expected = render_unit(UnitOptions(exec_path=EXE, device_id="field-03"))
    assert unit.read_text() == expected
    installed = root / "etc/fieldear/fieldear.toml"
    assert installed.read_text() == cfg.read_text()
    assert stat.S_IMODE(installed.stat().st_mode) == 0o640
    assert (root / "var/lib/fieldear/models").is_dir()
    assert stat.S_IMODE((root / "var/lib/fieldear").stat().st_mode) == 0o750
    systemctl = [c for c in rec.calls if c[0] == "systemctl"]
    assert systemctl == [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "fieldear.service"]]
    useradd = [c for c in rec.calls if c[0] == "useradd"]
    if useradd:  # only when this machine has no `fieldear` user
        assert useradd[0][-1] == "fieldear" and "--system" in useradd[0] and ["--groups", "audio"] == \
            useradd[0][useradd[0].index("--groups"):useradd[0].index("--groups") + 2]
        assert ["--root", str(root)] == useradd[0][1:3]


def test_install_keeps_the_installed_config_and_backs_up_on_replace(tmp_path):
    root = tmp_path / "root"
    installed = root / "etc/fieldear/fieldear.toml"
    installed.parent.mkdir(parents=True)
    installed.write_text('[device]\nid = "old"\n')
    plan = install_plan(None, None, EXE, root=root, run=Recorder(), systemctl=None, verify=False)
    assert not any("install -m 0640" in line for line in plan.lines())  # the installed one stays
    plan.run()
    assert 'id = "old"' in installed.read_text()
    assert "fieldear sound classifier (old)" in (root / "etc/systemd/system/fieldear.service").read_text()
    new = config_file(tmp_path, Path("/var/lib/fieldear"), mqtt=True)
    install_plan(new, None, EXE, root=root, run=Recorder(), systemctl=None, verify=False).run()
    assert 'id = "old"' in (root / "etc/fieldear/fieldear.toml.bak").read_text()
    unit = (root / "etc/systemd/system/fieldear.service").read_text()
    assert "IPAddressDeny" not in unit and "AF_INET" in unit  # MQTT configured: network allowed


def test_install_refuses_invalid_config_before_touching_anything(tmp_path):
    root = tmp_path / "root"
    bad = tmp_path / "bad.toml"
    bad.write_text("[detect]\nsmoothing = 0\n")
    with pytest.raises(ConfigError, match=r"\[detect\] smoothing"):
        install_plan(bad, None, EXE, root=root, run=Recorder(), verify=False)
    assert not root.exists()


def test_uninstall_and_purge(tmp_path):
    root = tmp_path / "root"
    cfg = config_file(tmp_path, Path("/srv/fieldear"))
    install_plan(cfg, None, EXE, root=root, run=Recorder(), systemctl=None, verify=False).run()
    (root / "srv/fieldear/fieldear.db").write_text("log")
    rec = Recorder()
    uninstall_plan(root=root, run=rec).run()
    assert not (root / "etc/systemd/system/fieldear.service").exists()
    assert (root / "srv/fieldear/fieldear.db").exists()  # the log is kept without --purge
    assert rec.calls == [["systemctl", "disable", "--now", "fieldear.service"], ["systemctl", "daemon-reload"]]
    uninstall_plan(root=root, purge=True, systemctl=None, run=Recorder()).run()
    assert not (root / "srv/fieldear").exists() and not (root / "etc/fieldear").exists()


@pytest.mark.train
def test_install_bundle_as_current(tmp_path, tmp_path_factory):
    from runtime.model.bundle import load_bundle
    from tests.field.support import field_bundles

    bundles = field_bundles(tmp_path_factory.getbasetemp() / "field-bundles")
    root = tmp_path / "root"
    with pytest.raises(ConfigError, match=r"\[model\] path"):
        install_plan(config_file(tmp_path, Path("/var/lib/fieldear")), bundles["A"], EXE, root=root, run=Recorder())
    cfg = config_file(tmp_path, Path("/var/lib/fieldear"), model="/var/lib/fieldear/models/current")
    install_plan(cfg, bundles["A"], EXE, root=root, run=Recorder(), systemctl=None, verify=False).run()
    current = root / "var/lib/fieldear/models/current"
    version = os.readlink(current)
    assert version == f"test-listen-{load_bundle(bundles['A']).short_sha}"
    assert load_bundle(current).sha256 == load_bundle(bundles["A"]).sha256
    # Installing again without --model keeps and checks what is there.
    install_plan(cfg, None, EXE, root=root, run=Recorder(), systemctl=None, verify=False).run()
    assert os.readlink(current) == version


def test_cli_render_and_dry_run(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "service", "render", "--config", str(EXAMPLE),
                          "--exec", str(EXE)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == render_unit(UnitOptions(exec_path=EXE, device_id="field-03", config_path=Path(
        "/etc/fieldear/fieldear.toml")))
    root = tmp_path / "root"
    dry = subprocess.run([sys.executable, "-m", "runtime.cli", "service", "install", "--root", str(root), "--dry-run",
                          "--config", str(config_file(tmp_path, Path("/var/lib/fieldear"))), "--exec", str(EXE)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "write /etc/systemd/system/fieldear.service (Type=notify, WatchdogSec=30s, User=fieldear)" in dry.stdout
    assert not root.exists()  # dry run: nothing written


def test_provision_script_parses_and_rejects_unknown_options():
    script = ROOT / "firmware_tools" / "provision.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    out = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "unknown option --bogus" in out.stderr


def test_install_verifies_the_unit_first(tmp_path):
    from tests.firmware_tools.test_unit import systemd_analyze

    systemd_analyze()  # skips (or fails under CI) without it
    exe = tmp_path / "fieldear"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o644)  # exists but is not executable: systemd could not start it
    cfg = config_file(tmp_path, Path("/var/lib/fieldear"))
    with pytest.raises(FieldearError, match="does not pass systemd-analyze verify.*not executable"):
        install_plan(cfg, None, exe, root=tmp_path / "root", run=Recorder())
    exe.chmod(0o755)
    plan = install_plan(cfg, None, exe, root=tmp_path / "root", run=Recorder())
    assert any(line.startswith("write /etc/systemd/system/fieldear.service") for line in plan.lines())
