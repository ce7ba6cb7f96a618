"""The studio's server part through the Flask test client: projects forms, uploads and folder imports of real
ESC-10 clips (checked as train checks them), labels, media paths confined to the project, the upload limit, CSRF,
and a server with projects and no device log."""

from __future__ import annotations

import io

import pytest

from tests.studio.conftest import csrf, labels_csv, make_studio_app


def form(client, url: str, **data):
    return client.post(url, data={"csrf_token": csrf(client), **data})


def post_json(client, url: str, body: dict):
    return client.post(url, json=body, headers={"X-CSRF-Token": csrf(client)})


def upload(client, project: str, name: str, data: bytes):
    return client.post(f"/studio/api/p/{project}/upload", query_string={"name": name}, data=data,
                       headers={"X-CSRF-Token": csrf(client), "Content-Type": "application/octet-stream"})


def test_projects_create_rename_delete_with_typed_confirmation(studio_client, tmp_path):
    c, root = studio_client, tmp_path / "projects"
    r = form(c, "/studio/projects", name="garden birds")
    assert r.status_code == 302 and r.headers["Location"].endswith("/studio/p/garden%20birds/import")
    assert (root / "garden birds" / "labels.csv").is_file()
    page = c.get("/studio/").get_data(as_text=True)
    assert "garden birds" in page and "created project" in page  # the flashed message
    assert "already exists" in c.get(form(c, "/studio/projects", name="garden birds").headers["Location"]).get_data(as_text=True)
    r = form(c, "/studio/projects", name="../evil")
    assert "not a usable project name" in c.get(r.headers["Location"]).get_data(as_text=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["projects"]
    form(c, "/studio/p/garden%20birds/rename", new_name="birds")
    assert sorted(p.name for p in root.iterdir()) == ["birds"]
    r = form(c, "/studio/p/birds/delete", confirm="bird")
    assert "confirmation does not match" in c.get(r.headers["Location"]).get_data(as_text=True)
    assert (root / "birds").is_dir()
    form(c, "/studio/p/birds/delete", confirm="birds")
    assert list(root.iterdir()) == []
    assert c.get("/studio/p/birds/label").status_code == 404


def test_uploads_are_checked_and_duplicates_flagged(studio_client, tmp_path, esc10):
    c, project = studio_client, tmp_path / "projects" / "p"
    form(c, "/studio/projects", name="p")
    dog = sorted((esc10 / "dog").iterdir())[0]
    r = upload(c, "p", f"esc10/dog/{dog.name}", dog.read_bytes())  # a folder drop sends the relative path
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["results"] == [{"source": f"esc10/dog/{dog.name}", "stored": dog.name, "problem": None,
                                        "duplicate_of": None, "label": None}]
    again = upload(c, "p", dog.name, dog.read_bytes()).get_json()["results"][0]
    assert again["stored"] != dog.name and again["duplicate_of"] == dog.name
    text = upload(c, "p", "notes.wav", (esc10 / "README.md").read_bytes()).get_json()["results"][0]
    assert text["stored"] is None and text["problem"].startswith("not_audio")
    suffix = upload(c, "p", "notes.txt", b"hello").get_json()["results"][0]
    assert suffix["stored"] is None and "not_audio" in suffix["problem"]
    evil = upload(c, "p", "../../evil.wav", dog.read_bytes()).get_json()["results"][0]
    assert evil["stored"] == "evil.wav" and (project / "audio" / "evil.wav").is_file()
    assert not (tmp_path / "evil.wav").exists() and not (tmp_path / "projects" / "evil.wav").exists()
    assert upload(c, "p", "..", b"x").status_code == 400
    assert list(labels_csv(project)) == [dog.name, again["stored"], "evil.wav"]
    assert list((project / ".incoming").iterdir()) == []  # nothing left behind


def test_an_upload_over_the_limit_is_refused_before_it_is_read(studio_client, tmp_path):
    c, project = studio_client, tmp_path / "projects" / "p"
    form(c, "/studio/projects", name="p")

    class NotToBeRead(io.BytesIO):
        def read(self, *a):
            raise AssertionError("the body was read")

        readinto = readline = read

    r = c.post("/studio/api/p/p/upload", query_string={"name": "huge.wav"},
               headers={"X-CSRF-Token": csrf(c)}, input_stream=NotToBeRead(),
               environ_overrides={"CONTENT_LENGTH": str(2 * 1024**3)})
    assert r.status_code == 413
    body = r.get_json()
    assert "huge.wav is 2,048 MB, over the upload limit of 512 MB" in body["error"]
    assert "folder on disk" in body["hint"]
    assert labels_csv(project) == {} and list((project / "audio").iterdir()) == []


def test_import_from_a_folder_on_disk(studio_client, tmp_path, esc10):
    c, project = studio_client, tmp_path / "projects" / "p"
    form(c, "/studio/projects", name="p")
    folder = tmp_path / "recordings"
    (folder / "rain").mkdir(parents=True)
    rain = sorted((esc10 / "rain").iterdir())[:3]
    for f in rain:
        (folder / "rain" / f.name).write_bytes(f.read_bytes())
    (folder / "rain" / "copy.wav").write_bytes(rain[0].read_bytes())
    (folder / "list.txt").write_text("not audio")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    r = post_json(c, "/studio/api/p/p/import-folder", {"path": str(folder)})
    assert r.status_code == 200, r.get_json()
    results = {x["source"]: x for x in r.get_json()["results"]}
    assert set(results) == {".DS_Store", "list.txt", "rain/copy.wav", *(f"rain/{f.name}" for f in rain)}
    assert results[".DS_Store"]["problem"].startswith("hidden")  # listed too: nothing dropped silently
    assert results["list.txt"]["problem"].startswith("not_audio") and results["list.txt"]["stored"] is None
    assert results[f"rain/{rain[0].name}"]["duplicate_of"] == "copy.wav"  # sorted: copy.wav comes first
    assert [x["duplicate_of"] for x in results.values()].count(None) == 5
    assert r.get_json()["counts"] == {"": 4}
    for bad, message in (("../recordings", "not an absolute path"), ("", "not an absolute path"),
                         (str(tmp_path / "nope"), "no such folder"), (str(project), "inside the project")):
        r = post_json(c, "/studio/api/p/p/import-folder", {"path": bad})
        assert r.status_code == 400 and message in r.get_json()["error"], (bad, r.get_json())


def test_labels_counts_warnings_and_media_confined_to_the_project(studio_client, tmp_path, esc10):
    c, project = studio_client, tmp_path / "projects" / "p"
    form(c, "/studio/projects", name="p")
    dogs, rain = sorted((esc10 / "dog").iterdir())[:4], sorted((esc10 / "rain").iterdir())[0]
    for f in [*dogs, rain]:
        upload(c, "p", f.name, f.read_bytes())
    r = post_json(c, "/studio/api/p/p/labels", {"files": [f.name for f in dogs], "label": "dog"})
    assert r.status_code == 200
    r = post_json(c, "/studio/api/p/p/labels", {"files": [rain.name], "label": "rain"}).get_json()
    assert r["counts"] == {"dog": 4, "rain": 1} and r["unlabelled"] == 0
    assert any("imbalanced" in w and "4.0x" in w for w in r["warnings"])
    assert labels_csv(project)[rain.name] == "rain"
    post_json(c, "/studio/api/p/p/labels", {"files": [dogs[0].name], "label": "background"})
    page = c.get("/studio/p/p/label").get_data(as_text=True)
    assert "few clips" in page and "imbalanced" not in page and page.count('<li class="clip') == 5  # dog 3, rain 1: 3.0x
    assert c.get("/studio/p/p/label?show=unlabelled").get_data(as_text=True).count('<li class="clip') == 0
    many = post_json(c, "/studio/api/p/p/labels", {"files": [f.name for f in dogs] * 3000, "label": "dog"})
    assert many.status_code == 200  # 12,000 names (over the app's 64 kB body limit): "select all" on a big project
    for body in ({"files": [rain.name], "label": "a/b"}, {"files": ["../labels.csv"], "label": "x"}, {"files": []}):
        assert post_json(c, "/studio/api/p/p/labels", body).status_code == 400
    png = c.get(f"/studio/p/p/spectrogram/{rain.name}")
    assert png.status_code == 200 and png.data.startswith(b"\x89PNG")
    wav = c.get(f"/studio/p/p/audio/{rain.name}")
    assert wav.status_code == 200 and wav.data == rain.read_bytes()
    (tmp_path / "projects" / "secret.wav").write_bytes(rain.read_bytes())
    for bad in ("..%2Fsecret.wav", "..%2F..%2Fsecret.wav", "%2Fetc%2Fpasswd", "labels.csv", "..%5Clabels.csv"):
        assert c.get(f"/studio/p/p/audio/{bad}").status_code == 404, bad
        assert c.get(f"/studio/p/p/spectrogram/{bad}").status_code == 404, bad
    assert c.get("/studio/p/..%2Fprojects/label").status_code == 404


def test_posts_need_the_csrf_token(studio_client, tmp_path):
    c = studio_client
    assert c.post("/studio/projects", data={"name": "x"}).status_code == 403
    assert c.post("/studio/api/p/x/upload?name=a.wav", data=b"RIFF").status_code == 403
    assert not (tmp_path / "projects" / "x").exists()


def test_a_studio_only_server_has_no_device_pages(tmp_path):
    app = make_studio_app(tmp_path / "projects")
    app.testing = True
    c = app.test_client()
    assert c.get("/").headers["Location"].endswith("/studio/")
    assert c.get("/live").headers["Location"].endswith("/studio/")
    r = c.get("/api/events")
    assert r.status_code == 404 and "studio only" in r.get_json()["error"]
    page = c.get("/studio/").get_data(as_text=True)
    assert ">Studio<" in page and ">Live<" not in page


def test_studio_beside_the_device_pages(log_copy, tmp_path):
    app = make_studio_app(tmp_path / "projects", db=log_copy)
    app.testing = True
    c = app.test_client()
    page = c.get("/live").get_data(as_text=True)
    assert ">Live<" in page and ">Studio<" in page
    assert c.get("/studio/").status_code == 200


def test_config_web_projects(tmp_path):
    from runtime.config import load_config
    from runtime.web.settings import settings_for

    (tmp_path / "f.toml").write_text('[web]\nprojects = "studio"\n')
    config = load_config(tmp_path / "f.toml")
    assert config.web.projects == tmp_path / "studio"
    s = settings_for(config, need_db=False)
    assert s.projects == tmp_path / "studio" and s.db is None
    assert settings_for(config, projects=tmp_path / "other", need_db=False).projects == tmp_path / "other"



def png_size(data: bytes) -> tuple[int, int]:
    import struct

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


def test_thumbnails_use_the_projects_newest_bundles_frontend(studio_client, tmp_path, esc10):
    import json

    from runtime.paths import DEFAULT_BUNDLE

    c, project = studio_client, tmp_path / "projects" / "p"
    form(c, "/studio/projects", name="p")
    clip = sorted((esc10 / "rain").iterdir())[0]
    upload(c, "p", clip.name, clip.read_bytes())
    default = json.loads((DEFAULT_BUNDLE / "model.json").read_text())["frontend"]
    width, height = png_size(c.get(f"/studio/p/p/spectrogram/{clip.name}").data)
    assert height == default["n_mels"]  # no bundle yet: the default bundle's frontend
    bundle = project / "bundles" / "b1"
    bundle.mkdir()
    meta = {"frontend": {**default, "n_mels": 40, "hop": default["hop"] // 2}}
    (bundle / "model.json").write_text(json.dumps(meta))
    w2, h2 = png_size(c.get(f"/studio/p/p/spectrogram/{clip.name}").data)
    assert h2 == 40 and abs(w2 - 2 * width) <= 2


def test_thumbnails_follow_the_newest_version_not_the_last_written_model_json(studio_client, tmp_path, esc10):
    """v2 is the newest bundle on every page even after v1's model.json was rewritten (as Save thresholds does)."""
    import json
    import os

    from runtime.paths import DEFAULT_BUNDLE

    c, project = studio_client, tmp_path / "projects" / "p"
    form(c, "/studio/projects", name="p")
    clip = sorted((esc10 / "rain").iterdir())[0]
    upload(c, "p", clip.name, clip.read_bytes())
    default = json.loads((DEFAULT_BUNDLE / "model.json").read_text())["frontend"]
    for version, n_mels in (("v2", 48), ("v1", 40), ("v10", 32)):
        (project / "bundles" / version).mkdir()
        (project / "bundles" / version / "model.json").write_text(json.dumps({"frontend": {**default,
                                                                                           "n_mels": n_mels}}))
    later = (project / "bundles" / "v10" / "model.json").stat().st_mtime + 60
    os.utime(project / "bundles" / "v1" / "model.json", (later, later))  # v1 rewritten last
    assert png_size(c.get(f"/studio/p/p/spectrogram/{clip.name}").data)[1] == 32  # v10's frontend, not v1's
    page = c.get("/studio/p/p/batch").get_data(as_text=True)
    assert page.index(">v10<") < page.index(">v2<") < page.index(">v1<")  # the same order in the bundle choice


def test_label_by_folder_as_train_reads_folders(studio_client, tmp_path, esc10):
    from convert.studio.web_import import folder_label

    assert [folder_label(x) for x in ("a.wav", "dog/a.wav", "esc10/dog/a.wav", "DATA/dog/deep/a.wav")] == \
        [None, "dog", "dog", "dog"]
    c, project = studio_client, tmp_path / "projects" / "p"
    form(c, "/studio/projects", name="p")
    data = tmp_path / "DATA"
    for label in ("dog", "rain"):
        (data / label).mkdir(parents=True)
        for f in sorted((esc10 / label).iterdir())[:2]:
            (data / label / f.name).write_bytes(f.read_bytes())
    loose = sorted((esc10 / "rooster").iterdir())[0]
    (data / loose.name).write_bytes(loose.read_bytes())
    r = post_json(c, "/studio/api/p/p/import-folder", {"path": str(data), "by_folder": True}).get_json()
    assert r["counts"] == {"dog": 2, "rain": 2, "DATA": 1}  # a file in the chosen folder: its name
    assert {x["source"]: x["label"] for x in r["results"]}[f"dog/{sorted((esc10 / 'dog').iterdir())[0].name}"] == "dog"
    fire = sorted((esc10 / "crackling_fire").iterdir())[0]
    r = c.post("/studio/api/p/p/upload", query_string={"name": f"picked/crackling_fire/{fire.name}", "by_folder": "1"},
               data=fire.read_bytes(), headers={"X-CSRF-Token": csrf(c)}).get_json()
    assert r["results"][0]["label"] == "crackling_fire" and labels_csv(project)[fire.name] == "crackling_fire"
    r = upload(c, "p", f"picked/crackling_fire/x-{fire.name}", fire.read_bytes()).get_json()  # without by_folder
    assert r["results"][0]["label"] is None and labels_csv(project)[f"x-{fire.name}"] == ""


def test_with_a_password_the_studio_needs_the_login_too(tmp_path):
    import base64
    import re

    from runtime.web.passwords import hash_password

    app = make_studio_app(tmp_path / "projects", password_hash=hash_password("s3cret"))
    app.testing = True
    c = app.test_client()
    for path in ("/studio/", "/studio/p/x/label", "/studio/p/x/audio/a.wav"):
        r = c.get(path)
        assert r.status_code == 302 and "/login" in r.headers["Location"], path
    assert c.get("/studio/api/p/x/labels").status_code == 401  # JSON endpoints: 401, not a redirect
    good = {"Authorization": "Basic " + base64.b64encode(b"any:s3cret").decode()}
    assert c.get("/studio/", headers=good).status_code == 200
    token = re.search(r'name="csrf-token" content="([^"]+)"', c.get("/login").get_data(as_text=True)).group(1)
    r = c.post("/login", data={"password": "s3cret", "csrf_token": token, "next": "/studio/"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/studio/")
    assert c.get("/studio/").status_code == 200


def test_other_formats_import_with_thumbnails_and_audio(studio_client, tmp_path, esc10):
    """FLAC and 24-bit WAV (what the loader reads, not only the device's 16-bit clips)."""
    sf = pytest.importorskip("soundfile")
    from runtime.audio.files import read_audio

    c = studio_client
    form(c, "/studio/projects", name="p")
    samples, rate = read_audio(sorted((esc10 / "rooster").iterdir())[0])
    sf.write(tmp_path / "rooster.flac", samples, rate, subtype="PCM_16")
    sf.write(tmp_path / "rooster24.wav", samples * 0.5, rate, subtype="PCM_24")
    for f in (tmp_path / "rooster.flac", tmp_path / "rooster24.wav"):
        r = upload(c, "p", f.name, f.read_bytes()).get_json()["results"][0]
        assert r["stored"] == f.name and r["problem"] is None, r
        png = c.get(f"/studio/p/p/spectrogram/{f.name}")
        assert png.status_code == 200 and png_size(png.data)[1] > 0
        audio = c.get(f"/studio/p/p/audio/{f.name}")
        assert audio.status_code == 200 and audio.data == f.read_bytes()
    assert c.get("/studio/p/p/audio/rooster.flac").mimetype == "audio/flac"
