"""The studio's train, report, online test, batch and deploy pages through the Flask test client, on a project and
bundle trained from real ESC-10 clips: every page renders, the APIs answer, bad input is refused clearly."""

from __future__ import annotations

import json
import time

import pytest

from tests.studio.conftest import csrf, make_studio_app

pytestmark = pytest.mark.train


@pytest.fixture
def client(trained_project):
    app = make_studio_app(trained_project.path.parent)
    app.testing = True
    return app.test_client()


def post_json(client, url: str, body: dict):
    return client.post(url, json=body, headers={"X-CSRF-Token": csrf(client)})


def test_pages_render_and_the_report_shows_report_json(client, trained_project):
    name = trained_project.name
    for page in ("train", "report", "test", "batch", "deploy"):
        r = client.get(f"/studio/p/{name}/{page}")
        assert r.status_code == 200, page
    page = client.get(f"/studio/p/{name}/report").get_data(as_text=True)
    report = json.loads((trained_project.path / "bundles" / "v1" / "report.json").read_text())
    assert f'<td id="m-accuracy">{report["metrics"]["accuracy"]:.3f}</td>' in page
    assert f'<td id="m-f1">{report["metrics"]["macro"]["f1"]:.3f}</td>' in page
    view = client.get(f"/studio/api/p/{name}/report/v1").get_json()
    assert set(view["curves"]) == {"dog", "rooster"}
    assert client.get(f"/studio/api/p/{name}/report/v9").status_code == 404
    r = post_json(client, f"/studio/api/p/{name}/report/v1/thresholds", {"thresholds": {"dog": 2}})
    assert r.status_code == 400 and "[0, 1]" in r.get_json()["error"]
    assert client.post(f"/studio/api/p/{name}/report/v1/thresholds", json={"thresholds": {}}).status_code in (400, 403)


def test_online_test_batch_and_deploy_through_the_server(client, trained_project, esc10, tmp_path):
    import shutil

    name = trained_project.name
    clip = sorted((esc10 / "dog").glob("*.wav"))[-1]
    r = client.post(f"/studio/api/p/{name}/test/v1", query_string={"name": clip.name}, data=clip.read_bytes(),
                    headers={"X-CSRF-Token": csrf(client), "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.get_json()
    out = r.get_json()
    assert [t["label"] for t in out["top"]] and out["duration_s"] == pytest.approx(5.0, abs=0.05)
    assert client.get(out["spectrogram"]).mimetype == "image/png"
    assert client.get(out["audio"]).status_code == 200
    r = client.post(f"/studio/api/p/{name}/test/v1", query_string={"name": "notes.txt"}, data=b"hello",
                    headers={"X-CSRF-Token": csrf(client), "Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and "not an audio file" in r.get_json()["error"]

    folder = tmp_path / "clips"
    folder.mkdir()
    for label in ("dog", "rooster"):
        for f in sorted((esc10 / label).glob("*.wav"))[-2:]:
            shutil.copyfile(f, folder / f"{label}_{f.name}")
    assert post_json(client, f"/studio/api/p/{name}/batch", {"folder": "relative"}).status_code == 400
    r = post_json(client, f"/studio/api/p/{name}/batch", {"folder": str(folder), "version": "v1", "truth": "prefix"})
    assert r.status_code == 202, r.get_json()
    again = post_json(client, f"/studio/api/p/{name}/batch", {"folder": str(folder), "version": "v1"})
    assert again.status_code == 400 and "already running" in again.get_json()["error"]
    deadline = time.monotonic() + 120
    state = r.get_json()["state"]
    while state["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.3)
        state = client.get(f"/studio/api/p/{name}/batch").get_json()["state"]
    assert state["status"] == "done" and state["evaluation"]["n_evaluated"] == 4
    csv_text = client.get(state["csv"]).get_data(as_text=True)
    assert csv_text.splitlines()[0].startswith("path,label,score,error")

    assert client.get(f"/studio/p/{name}/deploy/v1.tar.gz").mimetype == "application/gzip"
    r = post_json(client, f"/studio/api/p/{name}/deploy", {"host": "pi@field-01.local", "version": "v1",
                                                          "dry_run": True})
    assert r.status_code == 202 and r.get_json()["state"]["status"] == "running"
    state = wait_done(client, f"/studio/api/p/{name}/deploy", r.get_json()["state"])
    assert state["status"] == "done" and state["dry_run"] and state["host"] == "pi@field-01.local"
    assert any("rsync -a --delete" in line for line in state["log_tail"])
    page = client.get(f"/studio/p/{name}/deploy").get_data(as_text=True)
    assert 'aria-label="deploy progress">' in page  # not hidden: a page opened later shows the last deploy
    r = post_json(client, f"/studio/api/p/{name}/deploy", {"host": "-x", "version": "v1", "dry_run": True})
    assert r.status_code == 400 and "not a device address" in r.get_json()["error"]
    r = post_json(client, f"/studio/api/p/{name}/deploy", {"host": "pi@x", "version": "v9", "dry_run": True})
    assert r.status_code == 400 and "no bundle 'v9'" in r.get_json()["error"]


def wait_done(client, url: str, state: dict, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while state["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.3)
        state = client.get(url).get_json()["state"]
    return state


def test_training_a_project_with_one_label_is_refused_clearly(esc10, tmp_path):
    from tests.studio.conftest import labelled_project

    labelled_project(esc10, tmp_path / "projects", classes=("dog",), per_class=3)
    app = make_studio_app(tmp_path / "projects")
    app.testing = True
    c = app.test_client()
    r = post_json(c, "/studio/api/p/small/train", {"time_budget": 10})
    assert r.status_code == 400 and "1 label(s) to train on" in r.get_json()["error"]
    assert "at least two labels" in r.get_json()["hint"]
    assert c.get("/studio/api/p/small/train").get_json()["state"] is None  # nothing started
    r = post_json(c, "/studio/api/p/small/train", {"time_budget": "soon"})
    assert r.status_code == 400 and "must be a number" in r.get_json()["error"]
    r = post_json(c, "/studio/api/p/small/train/cancel", {})
    assert r.status_code == 400 and "no training is running" in r.get_json()["error"]
    assert "train the project" in c.get("/studio/p/small/report").get_data(as_text=True)


def test_train_start_and_cancel_through_the_api(project):
    app = make_studio_app(project.path.parent)
    app.testing = True
    c = app.test_client()
    r = post_json(c, f"/studio/api/p/{project.name}/train", {"time_budget": 20, "folds": 3})
    assert r.status_code == 202 and r.get_json()["state"]["status"] == "running"
    again = post_json(c, f"/studio/api/p/{project.name}/train", {"time_budget": 20})
    assert again.status_code == 400 and "already training v1" in again.get_json()["error"]
    page = c.get(f"/studio/p/{project.name}/train").get_data(as_text=True)
    assert 'id="run-status">running<' in page  # a page opened now shows the run
    # renaming or deleting the project under the running child is refused, with what runs and what to do
    for url, field in ((f"/studio/p/{project.name}/rename", {"new_name": "renamed"}),
                       (f"/studio/p/{project.name}/delete", {"confirm": project.name})):
        r = c.post(url, data={"csrf_token": csrf(c), **field})
        shown = c.get(r.headers["Location"]).get_data(as_text=True)
        assert "while a job runs in it: training v1" in shown and "cancel it on its page" in shown
    assert sorted(p.name for p in project.path.parent.iterdir()) == [project.name]
    r = post_json(c, f"/studio/api/p/{project.name}/train/cancel", {})
    assert r.get_json()["state"]["status"] == "cancelled"
    assert c.get(f"/studio/api/p/{project.name}/train").get_json()["state"]["status"] == "cancelled"
    assert not (project.path / "bundles" / "v1").exists()
    assert (project.path / "reports" / "train-v1.log").is_file()  # the log stays with the project
    r = c.post(f"/studio/p/{project.name}/rename", data={"csrf_token": csrf(c), "new_name": "renamed"})
    assert "renamed" in c.get(r.headers["Location"]).get_data(as_text=True)  # nothing runs now: allowed
    assert (project.path.parent / "renamed" / "reports" / "train-v1.log").is_file()
