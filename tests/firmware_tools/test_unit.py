"""firmware_tools.unit: the rendered systemd unit (golden files) and `systemd-analyze verify` on it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from firmware_tools.unit import (
    UnitOptions,
    options_from_config,
    render_unit,
    systemd_analyze_verify,
    watchdog_sec_for,
)
from runtime.config import load_config
from runtime.errors import ConfigError

GOLDEN = Path(__file__).resolve().parent / "golden"
EXAMPLE = Path(__file__).resolve().parents[2] / "firmware_tools" / "fieldear.example.toml"
UPDATE = os.environ.get("FIELDEAR_UPDATE_GOLDEN") == "1"

FIELD = UnitOptions(exec_path=Path("/opt/fieldear/venv/bin/fieldear"), device_id="field-03")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; FIELDEAR_UPDATE_GOLDEN=1 to accept"


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("systemd-analyze missing under CI=true (make sysdeps installs systemd)")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return tool


def test_golden_offline_unit():
    text = render_unit(FIELD)
    check_golden("fieldear.service", text)
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30s", "Restart=on-failure",
                 "User=fieldear", "SupplementaryGroups=audio", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes", "ReadWritePaths=/var/lib/fieldear",
                 "RestrictAddressFamilies=AF_UNIX", "IPAddressDeny=any",
                 "ExecStart=/opt/fieldear/venv/bin/fieldear listen --config /etc/fieldear/fieldear.toml",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text.splitlines(), line
    assert text.count("ReadWritePaths=") == 1


def test_golden_mqtt_dynamic_user_unit():
    text = render_unit(UnitOptions(exec_path=Path("/opt/fieldear/venv/bin/fieldear"), device_id="field-03",
                                   network=True, dynamic_user=True, watchdog_sec=20))
    check_golden("fieldear-mqtt-dynamic.service", text)
    lines = text.splitlines()
    assert "IPAddressDeny=any" not in lines
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in lines
    assert {"DynamicUser=yes", "SupplementaryGroups=audio", "StateDirectory=fieldear"} <= set(lines)
    assert not any(ln.startswith("User=") for ln in lines)


def test_options_follow_the_config(tmp_path):
    cfg = tmp_path / "fieldear.toml"
    cfg.write_text('[store]\ndata_dir = "/srv/fe"\n[health]\nwatchdog_stall_s = 15\n[mqtt]\nhost = "b"\n')
    opts = options_from_config(load_config(cfg, device_id="d1"), exec_path=Path("/opt/fe/bin/fieldear"))
    assert opts.data_dir == Path("/srv/fe") and opts.network and opts.watchdog_sec == 15
    assert opts.config_path == cfg.resolve() and opts.device_id == "d1"
    text = render_unit(opts)
    assert "ReadWritePaths=/srv/fe" in text and "IPAddressDeny" not in text
    assert watchdog_sec_for(3) == 10 and watchdog_sec_for(300) == 30


def test_metrics_port_without_mqtt_allows_loopback_only(tmp_path):
    cfg = tmp_path / "fieldear.toml"
    cfg.write_text('[store]\ndata_dir = "/srv/fe"\n[metrics]\nport = 9108\n')
    opts = options_from_config(load_config(cfg, device_id="d1"), exec_path=Path("/opt/fe/bin/fieldear"))
    assert opts.metrics_loopback and not opts.network
    lines = render_unit(opts).splitlines()
    loopback = {"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "IPAddressAllow=localhost", "IPAddressDeny=any"}
    assert loopback <= set(lines)
    assert "Wants=network-online.target" not in lines


def test_unsafe_paths_and_names_are_refused():
    with pytest.raises(ConfigError, match="absolute"):
        render_unit(UnitOptions(exec_path=Path("venv/bin/fieldear")))
    with pytest.raises(ConfigError, match="spaces"):
        render_unit(UnitOptions(exec_path=Path("/opt/my venv/bin/fieldear")))
    with pytest.raises(ConfigError, match="user name"):
        render_unit(UnitOptions(exec_path=Path("/opt/fe/bin/fieldear"), user="Root;x"))
    with pytest.raises(ConfigError, match="DynamicUser"):
        render_unit(UnitOptions(exec_path=Path("/opt/fe/bin/fieldear"), data_dir=Path("/srv/x"), dynamic_user=True))


def test_venv_under_home_relaxes_protect_home():
    text = render_unit(UnitOptions(exec_path=Path("/home/pi/fieldear/.venv/bin/fieldear")))
    assert "ProtectHome=read-only" in text.splitlines()


def test_leftover_placeholder_is_an_error(tmp_path):
    template = tmp_path / "t.in"
    template.write_text("[Service]\nExecStart=@EXEC@ @NEW_THING@\n")
    with pytest.raises(ConfigError, match="@NEW_THING@"):
        render_unit(FIELD, template=template)


@pytest.mark.parametrize("variant", [{}, {"network": True, "dynamic_user": True}])
def test_systemd_analyze_verify_passes(tmp_path, variant):
    tool = systemd_analyze()
    exe = tmp_path / "bin" / "fieldear"  # verify insists ExecStart exists and is executable
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    text = render_unit(UnitOptions(exec_path=exe, device_id="field-03", **variant))
    rc, output = systemd_analyze_verify(text, tmp_path / "units", analyze=tool)
    assert rc == 0, output
    assert output == "", output  # unknown keys or bad values only warn (rc 0): there must be none


def test_verify_catches_a_broken_unit(tmp_path):
    tool = systemd_analyze()
    text = render_unit(UnitOptions(exec_path=tmp_path / "missing" / "fieldear"))
    rc, output = systemd_analyze_verify(text, tmp_path / "units", analyze=tool)
    assert rc != 0 and "not executable" in output
    exe = Path("/bin/true")
    rc, output = systemd_analyze_verify(render_unit(UnitOptions(exec_path=exe)).replace("UMask=", "Umask="),
                                        tmp_path / "units2", analyze=tool)
    assert "Unknown key" in output
