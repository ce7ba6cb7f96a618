"""`service install --web`: the fieldear-web.service unit (`fieldear serve`), golden, verified, installed, removed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from firmware_tools.service import install_plan, uninstall_plan
from firmware_tools.unit import UnitOptions, render_web_unit, systemd_analyze_verify
from runtime.errors import ConfigError
from tests.firmware_tools.test_service import EXE, ROOT, Recorder, config_file
from tests.firmware_tools.test_unit import EXAMPLE, FIELD, check_golden, systemd_analyze


def test_golden_web_unit():
    text = render_web_unit(FIELD)
    check_golden("fieldear-web.service", text)
    lines = text.splitlines()
    for line in ("ExecStart=/opt/fieldear/venv/bin/fieldear serve --config /etc/fieldear/fieldear.toml",
                 "User=fieldear", "Group=fieldear", "ReadWritePaths=/var/lib/fieldear", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "PrivateDevices=yes", "IPAddressAllow=localhost", "IPAddressDeny=any",
                 "After=network.target fieldear.service", "Type=simple"):
        assert line in lines, line
    assert "SupplementaryGroups=audio" not in lines  # no sound devices for the web page
    assert not any(ln.startswith(("WatchdogSec", "ExecReload", "DeviceAllow")) for ln in lines)


def test_web_unit_off_loopback_and_dynamic_user():
    text = render_web_unit(UnitOptions(exec_path=EXE, device_id="field-03", web_host="0.0.0.0", web_port=8443,
                                       dynamic_user=True))
    lines = text.splitlines()
    assert "IPAddressDeny=any" not in lines and "(field-03, 0.0.0.0:8443)" in text
    # the listener's dynamic user is named after its unit: the web unit names it to share the uid
    assert {"DynamicUser=yes", "User=fieldear", "StateDirectory=fieldear"} <= set(lines)


def test_web_unit_memory_cap_leaves_room_for_retraining_only_with_the_train_extra():
    from firmware_tools.unit import WEB_MEMORY_MAX, WEB_MEMORY_MAX_RETRAIN

    page_only = render_web_unit(UnitOptions(exec_path=EXE)).splitlines()
    retrain = render_web_unit(UnitOptions(exec_path=EXE, web_retrain=True)).splitlines()
    assert f"MemoryMax={WEB_MEMORY_MAX}" in page_only and f"MemoryMax={WEB_MEMORY_MAX_RETRAIN}" in retrain
    assert sum(ln.startswith("MemoryMax=") for ln in retrain) == 1


@pytest.mark.parametrize("variant", [{}, {"web_host": "0.0.0.0", "dynamic_user": True}, {"web_retrain": True}])
def test_systemd_analyze_verify_passes_web(tmp_path, variant):
    tool = systemd_analyze()
    exe = tmp_path / "bin" / "fieldear"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    text = render_web_unit(UnitOptions(exec_path=exe, device_id="field-03", **variant))
    rc, output = systemd_analyze_verify(text, tmp_path / "units", name="fieldear-web.service", analyze=tool)
    assert rc == 0, output
    assert output == "", output


def test_install_web_writes_both_units_and_enables_both(tmp_path):
    root = tmp_path / "root"
    cfg = config_file(tmp_path, Path("/var/lib/fieldear"))
    rec = Recorder()
    install_plan(cfg, None, EXE, root=root, run=rec, verify=False, web=True).run()
    web = root / "etc/systemd/system/fieldear-web.service"
    from firmware_tools.unit import train_extra_installed

    assert web.read_text() == render_web_unit(UnitOptions(exec_path=EXE, device_id="field-03",
                                                          web_retrain=train_extra_installed()))
    assert (root / "etc/systemd/system/fieldear.service").is_file()
    systemctl = [c for c in rec.calls if c[0] == "systemctl"]
    assert systemctl == [["systemctl", "daemon-reload"],
                         ["systemctl", "enable", "--now", "fieldear.service", "fieldear-web.service"]]
    rec = Recorder()
    uninstall_plan(root=root, run=rec).run()
    assert not web.exists()
    assert rec.calls[0] == ["systemctl", "disable", "--now", "fieldear.service", "fieldear-web.service"]


def test_install_web_refuses_an_open_host_without_password(tmp_path):
    root = tmp_path / "root"
    cfg = config_file(tmp_path, Path("/var/lib/fieldear"))
    cfg.write_text(cfg.read_text() + '[web]\nhost = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match=r"\[web\] host = 0.0.0.0 needs \[web\] password_file"):
        install_plan(cfg, None, EXE, root=root, run=Recorder(), verify=False, web=True)
    assert not root.exists()
    cfg.write_text(cfg.read_text() + 'password_file = "/etc/fieldear/web-password"\n')
    plan = install_plan(cfg, None, EXE, root=root, run=Recorder(), verify=False, web=True)
    assert any("fieldear-web.service (fieldear serve on 0.0.0.0:8080)" in line for line in plan.lines())


def test_cli_render_web():
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "service", "render", "--web", "--config", str(EXAMPLE),
                          "--exec", str(EXE)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    from firmware_tools.unit import train_extra_installed

    assert out.stdout == render_web_unit(UnitOptions(exec_path=EXE, device_id="field-03",
                                                     config_path=Path("/etc/fieldear/fieldear.toml"),
                                                     web_retrain=train_extra_installed()))
