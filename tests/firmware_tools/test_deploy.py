"""firmware_tools.deploy against a local stand-in device: an ssh stand-in runs the remote commands here, in a
temporary "device root"; the stand-in for `systemctl restart` really (re)starts `fieldear listen` there, and the
health check is the real `fieldear status --json`."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_tools.deploy import (
    Deployer,
    DeployOptions,
    _check_reason,
    _reported_model,
)
from runtime.errors import FieldearError

ROOT = Path(__file__).resolve().parents[2]


def rsync_or_skip() -> None:
    if shutil.which("rsync") is None:
        msg = "rsync is not installed (apt-get install rsync)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def make_device(tmp_path: Path, forest: Path) -> dict:
    dev = tmp_path / "device"
    for d in ("bin", "etc/fieldear", "var/lib/fieldear/models", "var/log", "run", "tmp"):
        (dev / d).mkdir(parents=True)
    data = dev / "var/lib/fieldear"
    (dev / "etc/fieldear/fieldear.toml").write_text(
        f'[device]\nid = "field-03"\n[model]\npath = "{data}/models/current"\n[store]\ndata_dir = "{data}"\n'
        "[health]\nevery_s = 1\nwatchdog_stall_s = 10\n")
    ssh = dev / "bin" / "ssh-standin"
    ssh.write_text("#!/bin/sh\n# ssh stand-in: [options] HOST COMMAND... -> run COMMAND here with sh, as sshd would\n"
                   "while [ $# -gt 0 ]; do case \"$1\" in -l) user=$2; shift 2;; -p|-o|-i|-F) shift 2;; -*) shift;; "
                   "*) break;; esac; done\n"
                   f'echo "${{user:+$user@}}$1" >> {dev}/ssh-hosts.log\nshift\ncd {dev}\nexec sh -c "$*"\n')
    restart = dev / "bin" / "restart-fieldear"
    python = shlex.quote(sys.executable)
    restart.write_text(
        "#!/bin/sh\n# stands in for `systemctl restart fieldear`: stop the listener (SIGTERM), start a new one\n"
        f"R={dev}\n"
        'if [ -f $R/run/fieldear.pid ]; then pid=$(cat $R/run/fieldear.pid); kill $pid 2>/dev/null; i=0; '
        'while kill -0 $pid 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; fi\n'
        f"cd {ROOT}\n"
        f"TF_CPP_MIN_LOG_LEVEL=3 setsid {python} -m runtime.cli listen --file {forest} --realtime "
        "--config $R/etc/fieldear/fieldear.toml >>$R/var/log/fieldear.log 2>&1 </dev/null &\n"
        "echo $! > $R/run/fieldear.pid\n")
    for script in (ssh, restart):
        script.chmod(0o755)
    fieldear = dev / "bin" / "fieldear"
    fieldear.write_text(f"#!/bin/sh\ncd {ROOT}\nTF_CPP_MIN_LOG_LEVEL=3 exec {python} -m runtime.cli \"$@\"\n")
    fieldear.chmod(0o755)
    return {"root": dev, "ssh": str(ssh), "restart": str(restart), "fieldear": str(fieldear),
            "data": data, "config": dev / "etc/fieldear/fieldear.toml"}


def options(dev: dict, **kw) -> DeployOptions:
    base = dict(host="pi@field-03.local", ssh_command=dev["ssh"], remote_fieldear=dev["fieldear"],
                remote_data_dir=str(dev["data"]), remote_config=str(dev["config"]),
                remote_stage=str(dev["root"] / "tmp" / "fieldear-deploy"), restart_command=dev["restart"],
                check_tries=12, check_interval=1.0, sudo=False)
    return DeployOptions(**{**base, **kw})


def stop_device(dev: dict) -> None:
    pid_file = dev["root"] / "run" / "fieldear.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass


def broken_bundle(src: Path, out: Path) -> Path:
    """A bundle that passes every checksum but whose head is not a TFLite model (the service cannot start)."""
    from runtime.model.bundle import load_bundle, write_bundle

    b = load_bundle(src)
    meta = {k: v for k, v in b.meta.items() if k not in ("json_sha256", "files")}
    meta["name"] = "broken"
    for s in meta["stages"]:
        s.pop("sha256", None)
    return write_bundle(out, {"backbone.tflite": src / "backbone.tflite", "head.tflite": b"not a flatbuffer" * 64},
                        meta, force=True)


@pytest.mark.train
def test_dry_run_prints_every_command_and_runs_none(tmp_path_factory):
    from tests.field.support import field_bundles

    bundles = field_bundles(tmp_path_factory.getbasetemp() / "field-bundles")
    calls = []
    opts = DeployOptions(host="pi@field-03.local", model=bundles["A"])
    res = Deployer(opts, run=lambda *a, **k: calls.append(a), dry_run=True).deploy()
    assert calls == [] and res.deployed
    printed = "\n".join(res.plan)
    for needle in ("rsync -a --delete -e ssh", "pi@field-03.local:/tmp/fieldear-deploy/test-listen-",
                   "ssh pi@field-03.local sudo -n sh -s <<'SCRIPT'", "config check /etc/fieldear/fieldear.toml --model",
                   "ln -sfn test-listen-", 'mv -T "$M/.current.new" "$M/current"',
                   "ssh pi@field-03.local sudo -n sh -c 'systemctl restart fieldear'",
                   "/opt/fieldear/venv/bin/fieldear status --json --config /etc/fieldear/fieldear.toml",
                   "# if the health check fails:", "ln -sfn '$PREVIOUS_MODEL'"):
        assert needle in printed, needle


def test_nothing_to_deploy_is_an_error():
    with pytest.raises(FieldearError, match="nothing to deploy"):
        Deployer(DeployOptions(host="h"), dry_run=True).deploy()


def test_reported_model():
    assert _reported_model(json.dumps({"run": {"model_sha": "abc"}})) == "abc"
    assert _reported_model(json.dumps({"run": None, "heartbeat": {"model_sha": "def"}})) == "def"
    assert _reported_model("not json") is None
    assert _check_reason(json.dumps({"problems": ["service fieldear is failed", "x"]}), "") == \
        "service fieldear is failed; x"
    assert _check_reason("", "ssh: connect to host h port 22: No route to host\n") == \
        "ssh: connect to host h port 22: No route to host"


@pytest.mark.train
@pytest.mark.slow
def test_deploy_then_failed_deploy_rolls_back(tmp_path, tmp_path_factory, capsys):
    from runtime.model.bundle import load_bundle
    from tests.field.support import field_bundles, forest_recording

    rsync_or_skip()
    bundles = field_bundles(tmp_path_factory.getbasetemp() / "field-bundles")
    forest = forest_recording(tmp_path_factory.getbasetemp() / "forest120.wav", n_files=12)
    dev = make_device(tmp_path, forest)
    try:
        # 1. first deploy: bundle A + config (there is no previous model)
        first = Deployer(options(dev, model=bundles["A"], config=dev["config"])).deploy()
        assert first.deployed and first.previous_model is None, first
        models = dev["data"] / "models"
        sha_a, sha_b = load_bundle(bundles["A"]).sha256, load_bundle(bundles["B"]).sha256
        assert os.readlink(models / "current") == first.version and first.version.endswith(sha_a[:12])

        # 2. deploy bundle B: new versioned dir, atomic switch, restart, status reports B
        new_cfg = tmp_path / "new.toml"
        new_cfg.write_text(dev["config"].read_text().replace('id = "field-03"', 'id = "field-03"\nlocation = "plot 7"'))
        second = Deployer(options(dev, model=bundles["B"], config=new_cfg)).deploy()
        assert second.deployed and second.previous_model == first.version
        assert os.readlink(models / "current") == second.version
        assert json.loads(second.check_output)["run"]["model_sha"] == sha_b
        assert (models / first.version).is_dir()  # kept for rollback
        assert "plot 7" in dev["config"].read_text() and "plot 7" not in Path(str(dev["config"]) + ".prev").read_text()

        # 3. deploy a bundle the interpreter cannot load: the service fails, the check fails -> roll back to B
        bad = broken_bundle(bundles["B"], tmp_path / "broken")
        third = Deployer(options(dev, model=bad, check_tries=8)).deploy()
        assert not third.deployed and third.rolled_back and third.healthy_after_rollback, third
        assert third.previous_model == second.version
        assert os.readlink(models / "current") == second.version
        status = subprocess.run([dev["fieldear"], "status", "--json", "--config", str(dev["config"])],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and json.loads(status.stdout)["run"]["model_sha"] == sha_b
        log_text = (dev["root"] / "var/log/fieldear.log").read_text()
        assert "fieldear listen: error" in log_text or "Traceback" in log_text  # the broken start, logged
        assert set((dev["root"] / "ssh-hosts.log").read_text().split()) == {"pi@field-03.local"}  # ssh and rsync
        for name, r in (("first", first), ("second", second), ("third", third)):
            print(f"deploy {name}: version={r.version} previous={r.previous_model} deployed={r.deployed} "
                  f"rolled_back={r.rolled_back} healthy_after_rollback={r.healthy_after_rollback} "
                  f"commands={len(r.commands)}")
    finally:
        stop_device(dev)
