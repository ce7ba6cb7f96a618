"""The Model page: retrain from the log's reviews and switch the listener to the result (issue 13, item 4).

The API rules with injected children (one job at a time, the train extra required, switching only inside the
models dir, never to a bundle that does not load), the SIGHUP to the unit's main process, and the whole loop in
headless Chromium: a real demo log reviewed, the button starts a real `fieldear train --update --reviews`, the page
shows it finish, the switch button points models/current at the new bundle and asks the listener to reload."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.errors import FieldearError
from runtime.paths import DEFAULT_BUNDLE
from tests.web.conftest import csrf

pytest.importorskip("flask")


class FakeChild:
    """A Popen stand-in: running until ``finish()``; ``finish`` writes the bundle's model.json like train does."""

    def __init__(self, argv, **kw):
        self.argv = argv
        self.pid = os.getpid()  # alive
        self.returncode = None
        self.kw = kw

    def poll(self):
        return self.returncode

    def finish(self, ok: bool = True):
        out = Path(self.argv[self.argv.index("--out") + 1])
        if ok:
            out.mkdir(parents=True)
            (out / "model.json").write_text(json.dumps({"name": "next", "labels": ["dog"]}), encoding="utf-8")
        self.returncode = 0 if ok else 2


def device(tmp_path: Path, log_copy: Path) -> tuple[Path, Path]:
    """DATA/models/{v1 (a copy of the default bundle), current -> v1} beside the log; returns (current, log)."""
    models = log_copy.parent / "models"
    shutil.copytree(DEFAULT_BUNDLE, models / "v1")
    (models / "current").symlink_to("v1")
    return models / "current", log_copy


def control_client(current: Path, db: Path, **kw):
    from runtime.web.app import create_app
    from runtime.web.retrain import ModelControl
    from runtime.web.settings import WebSettings

    settings = WebSettings(db=db, model=current)
    control = ModelControl(settings, **kw)
    app = create_app(settings, clock=lambda: 1_800_000_000.0, status_state=None, models=control)
    app.testing = True
    return app.test_client(), control


def post(client, url, body=None):
    return client.post(url, json=body or {}, headers={"X-CSRF-Token": csrf(client)})


def test_one_retrain_at_a_time_then_done(tmp_path, log_copy):
    children = []

    def popen(argv, **kw):
        children.append(FakeChild(argv, **kw))
        return children[-1]

    current, db = device(tmp_path, log_copy)
    client, _ = control_client(current, db, popen=popen, find_module=lambda name: object())
    r = post(client, "/api/model/retrain")
    assert r.status_code == 202, r.get_json()
    argv = children[0].argv
    assert argv[argv.index("--update") + 1] == str((current.parent / "v1").resolve())
    assert argv[argv.index("--reviews") + 1] == str(db)
    assert Path(argv[argv.index("--out") + 1]).parent == current.parent  # the new bundle lands in the models dir
    assert r.get_json()["retrain"]["status"] == "running"
    again = post(client, "/api/model/retrain")
    assert again.status_code == 400 and "already running" in again.get_json()["error"]
    assert len(children) == 1
    children[0].finish()
    state = client.get("/api/model").get_json()["retrain"]
    assert state["status"] == "done" and state["bundle"]["name"] == "next"
    versions = [b["version"] for b in client.get("/api/model").get_json()["bundles"]]
    assert sorted(versions) == sorted(["v1", state["version"]])
    page = client.get("/model").get_data(as_text=True)
    assert "Retrain from reviews" in page and state["version"] in page


def test_a_failed_retrain_shows_its_log(tmp_path, log_copy):
    children = []

    def popen(argv, stdout=None, **kw):
        stdout.write(b"fieldear train: error: --update needs --background DIR or --reviews DB with reviews\n")
        children.append(FakeChild(argv))
        return children[-1]

    current, db = device(tmp_path, log_copy)
    client, _ = control_client(current, db, popen=popen, find_module=lambda name: object())
    post(client, "/api/model/retrain")
    children[0].finish(ok=False)
    state = client.get("/api/model").get_json()["retrain"]
    assert state["status"] == "failed"
    assert any("needs --background" in line for line in state["log_tail"])


def test_retrain_without_the_train_extra_says_so(tmp_path, log_copy):
    current, db = device(tmp_path, log_copy)
    client, _ = control_client(current, db, popen=lambda *a, **k: pytest.fail("started"),
                               find_module=lambda name: None if name == "tensorflow" else object())
    r = post(client, "/api/model/retrain")
    assert r.status_code == 400
    assert "train extra" in r.get_json()["error"] and "fieldear deploy" in r.get_json()["hint"]


def test_switch_points_current_at_the_bundle_and_reloads(tmp_path, log_copy):
    current, db = device(tmp_path, log_copy)
    shutil.copytree(DEFAULT_BUNDLE, current.parent / "v2")
    reloads = []
    client, _ = control_client(current, db, reload_listener=lambda: reloads.append(1) or "reloaded (test)")
    r = post(client, "/api/model/switch", {"version": "v2"})
    assert r.status_code == 200, r.get_json()
    assert os.readlink(current) == "v2" and reloads == [1]
    assert r.get_json() == {"switched": "v2", "previous": "v1", "reloaded": True, "reload": "reloaded (test)"}
    back = post(client, "/api/model/switch", {"version": "v1"})  # rolling back is the same action
    assert back.status_code == 200 and os.readlink(current) == "v1"


@pytest.mark.parametrize("version", ["../v1", "current", ".current.new", "missing", "", "v1/../v1"])
def test_switch_refuses_anything_but_a_bundle_of_the_models_dir(tmp_path, log_copy, version):
    current, db = device(tmp_path, log_copy)
    client, _ = control_client(current, db, reload_listener=lambda: pytest.fail("reloaded"))
    r = post(client, "/api/model/switch", {"version": version})
    assert r.status_code == 400
    assert os.readlink(current) == "v1"


def test_switch_refuses_a_bundle_that_does_not_load(tmp_path, log_copy):
    current, db = device(tmp_path, log_copy)
    broken = current.parent / "v2"
    shutil.copytree(DEFAULT_BUNDLE, broken)
    head = broken / "head.tflite"
    data = bytearray(head.read_bytes())
    data[len(data) // 2] ^= 0xFF
    head.write_bytes(bytes(data))
    client, _ = control_client(current, db, reload_listener=lambda: pytest.fail("reloaded"))
    r = post(client, "/api/model/switch", {"version": "v2"})
    assert r.status_code == 400 and "checksum mismatch" in r.get_json()["error"]
    assert os.readlink(current) == "v1"


def test_no_switching_when_the_model_is_not_a_current_link(tmp_path, log_copy):
    client, _ = control_client(DEFAULT_BUNDLE, log_copy)
    overview = client.get("/api/model").get_json()
    assert overview["switchable"] is False and "not a models/current link" in overview["why_not_switchable"]
    r = post(client, "/api/model/switch", {"version": "default"})
    assert r.status_code == 400 and "cannot switch" in r.get_json()["error"]


def test_sighup_unit_signals_the_units_main_process(tmp_path):
    from runtime.web.retrain import sighup_unit

    flag = tmp_path / "hup"
    child = subprocess.Popen([sys.executable, "-c", (
        "import signal, sys, time, pathlib\n"
        f"signal.signal(signal.SIGHUP, lambda *a: (pathlib.Path({str(flag)!r}).write_text('hup'), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        calls = []

        def run(argv, **kw):
            calls.append(argv)
            return subprocess.CompletedProcess(argv, 0, stdout=f"{child.pid}\n", stderr="")

        how = sighup_unit("fieldear", run=run)
        assert child.wait(timeout=10) == 0 and flag.read_text() == "hup"
        assert calls == [["systemctl", "show", "--property", "MainPID", "--value", "fieldear"]]
        assert str(child.pid) in how
    finally:
        if child.poll() is None:
            child.kill()
    stopped = lambda argv, **kw: subprocess.CompletedProcess(argv, 0, stdout="0\n", stderr="")
    with pytest.raises(FieldearError, match="not running under systemd"):
        sighup_unit("fieldear", run=stopped)


@pytest.mark.browser
@pytest.mark.train
@pytest.mark.slow
def test_retrain_and_switch_in_the_browser(tmp_path, log_copy):
    """The page's buttons, in Chromium, over a reviewed demo log: a real `train --update --reviews` child."""
    from selenium.webdriver.common.by import By

    from runtime.store.queries import reviewed_events
    from runtime.store.reviews import Review, add_review
    from runtime.store.schema import connect
    from tests.web.browser import (
        ServedApp,
        chromium_driver,
        require_chromium,
        screenshot_dir,
    )
    from tests.web.browser import wait_for

    require_chromium()
    current, db = device(tmp_path, log_copy)
    conn = connect(db)
    try:
        events = reviewed_events(conn)
        for i, e in enumerate(sorted(events, key=lambda e: e["id"])):
            add_review(conn, Review(e["id"], "confirm" if i % 2 == 0 else "reject", "tester"))
    finally:
        conn.close()
    reloads = []
    from runtime.web.app import create_app
    from runtime.web.retrain import ModelControl
    from runtime.web.settings import WebSettings

    settings = WebSettings(db=db, model=current)
    control = ModelControl(settings, reload_listener=lambda: reloads.append(time.time()) or "reloaded (test)")
    app = create_app(settings, status_state=None, models=control)
    driver = chromium_driver()
    try:
        with ServedApp(app) as served:
            driver.get(served.url + "/model")
            assert "Retrain from reviews" in driver.page_source
            driver.find_element(By.ID, "retrain").click()
            wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "button.switch"), timeout=240,
                     what="the retrain to finish and the page to list the new bundle")
            state = control.state()
            assert state["status"] == "done", state["log_tail"]
            driver.save_screenshot(str(screenshot_dir() / "model.png"))
            driver.find_element(By.CSS_SELECTOR, f'button.switch[data-version="{state["version"]}"]').click()
            driver.switch_to.alert.accept()
            wait_for(lambda: "switched to" in driver.find_element(By.ID, "switch-result").text, what="the switch")
    finally:
        driver.quit()
    assert os.readlink(current) == state["version"] and len(reloads) == 1
    report = json.loads((current.parent / state["version"] / "report.json").read_text())
    assert report["update"]["reviews"]["clips_in_training"] >= 1
    from runtime.model.bundle import load_bundle

    assert load_bundle(current).sha256 != load_bundle(current.parent / "v1").sha256
