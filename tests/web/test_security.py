"""Who may use the page: loopback by default, a password (scrypt hash in a file) for anything else."""

from __future__ import annotations

import base64

import pytest

from runtime.config import default_config, load_config
from runtime.errors import ConfigError
from runtime.web.passwords import check_hash, hash_password, verify_password
from runtime.web.settings import is_loopback, settings_for
from tests.web.conftest import make_client


def test_hash_and_verify():
    h = hash_password("correct horse")
    assert h.startswith("scrypt:16384:8:1$") and "correct" not in h
    assert verify_password(h, "correct horse") and not verify_password(h, "wrong")
    assert hash_password("x") != hash_password("x")  # salted
    assert not verify_password("garbage", "x")
    with pytest.raises(ConfigError, match="not a password hash"):
        check_hash("hunter2")
    with pytest.raises(ConfigError, match="empty password"):
        hash_password("")


def test_loopback_rule(tmp_path):
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.4.1", "::", "fieldear.local"))
    config = default_config("d")
    s = settings_for(config, db=tmp_path / "x.db")
    assert (s.host, s.port, s.password_hash) == ("127.0.0.1", 8080, None)
    with pytest.raises(ConfigError, match="refusing to serve on 0.0.0.0 without a password") as e:
        settings_for(config, db=tmp_path / "x.db", host="0.0.0.0")
    assert "--password-file" in e.value.hint
    pw = tmp_path / "pw"
    pw.write_text(hash_password("s3cret") + "\n")
    s = settings_for(config, db=tmp_path / "x.db", host="0.0.0.0", port=9000, password_file=pw)
    assert s.host == "0.0.0.0" and s.port == 9000 and verify_password(s.password_hash, "s3cret")
    pw.write_text("s3cret\n")  # a plain password is not accepted as a hash
    with pytest.raises(ConfigError, match="not a password hash"):
        settings_for(config, db=tmp_path / "x.db", host="0.0.0.0", password_file=pw)
    with pytest.raises(ConfigError, match="cannot read"):
        settings_for(config, db=tmp_path / "x.db", host="0.0.0.0", password_file=tmp_path / "missing")


def test_web_config_section(tmp_path):
    cfg = tmp_path / "f.toml"
    cfg.write_text('[web]\nhost = "0.0.0.0"\nport = 8443\npassword_file = "web-pw"\n')
    config = load_config(cfg, device_id="d")
    assert config.web.host == "0.0.0.0" and config.web.port == 8443 and config.web.password_file == tmp_path / "web-pw"
    for text, needle in (('[web]\nport = 0\n', "[web] port: expected an integer in 1..65535, got 0"),
                         ('[web]\nhost = "a b"\n', "[web] host: expected a host name or IP address"),
                         ('[web]\nuser = "x"\n', "[web] user: unknown key")):
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=r"f\.toml: " + needle.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
            load_config(cfg, device_id="d")


@pytest.fixture
def locked(log_copy):
    return make_client(log_copy, password_hash=hash_password("s3cret"), host="0.0.0.0")


def test_password_required_for_pages_and_api(locked):
    r = locked.get("/detections?label=dog")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=")
    assert locked.get("/api/events").status_code == 401
    assert locked.get("/api/events/1/clip").status_code == 401
    assert locked.get("/api/clips/x.wav").status_code == 401
    assert locked.get("/static/app.js").status_code == 200  # no secrets in static files
    assert locked.get("/login").status_code == 200


def test_login_flow(locked):
    page = locked.get("/login").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    assert locked.post("/login", data={"password": "s3cret"}).status_code == 403  # the login form has CSRF too
    bad = locked.post("/login", data={"password": "nope", "csrf_token": token})
    assert bad.status_code == 401 and "wrong password" in bad.get_data(as_text=True)
    ok = locked.post("/login", data={"password": "s3cret", "csrf_token": token, "next": "//evil.example/"})
    assert ok.status_code == 302 and ok.headers["Location"] == "/live"  # no open redirect
    assert locked.get("/api/events").status_code == 200
    token = locked.get("/api/csrf").get_json()["csrf_token"]
    assert locked.post("/api/events/1/review", json={"action": "confirm"},
                       headers={"X-CSRF-Token": token}).status_code == 201
    assert locked.post("/logout", data={"csrf_token": token}).status_code == 302
    assert locked.get("/api/events").status_code == 401


def test_basic_auth_for_scripts(locked):
    good = {"Authorization": "Basic " + base64.b64encode(b"script:s3cret").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"script:nope").decode()}
    assert locked.get("/api/events", headers=good).status_code == 200
    assert locked.get("/api/events", headers=bad).status_code == 401
    assert locked.get("/api/events", headers={"Authorization": "Basic !!!"}).status_code == 401
    # Basic auth alone does not pass CSRF: a POST still needs the session's token
    assert locked.post("/api/events/1/review", json={"action": "confirm"}, headers=good).status_code == 403
    token = locked.get("/api/csrf", headers=good).get_json()["csrf_token"]
    assert locked.post("/api/events/1/review", json={"action": "confirm"},
                       headers={**good, "X-CSRF-Token": token}).status_code == 201
