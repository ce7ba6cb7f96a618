"""Helpers for the real-browser tests: the Debian Chromium headless through the Debian chromium-driver (nothing
downloaded at run time), and the app served by waitress on a free port in a thread."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("FIELDEAR_TEST_OUT", ROOT / "out"))


def require_chromium() -> None:
    """Skip without Chromium/chromedriver/selenium, except under CI=true: there it is a failure."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        msg = f"browser tests need {', '.join(missing)} (make sysdeps installs chromium and chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def chromium_driver(width: int = 1400, height: int = 1000, extra_args: tuple[str, ...] = ()):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--autoplay-policy=no-user-gesture-required", *extra_args):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


class ServedApp:
    """create_app(settings) under waitress on 127.0.0.1:<free port>, in a daemon thread."""

    def __init__(self, app):
        import waitress.server

        self.server = waitress.server.create_server(app, host="127.0.0.1", port=0, threads=4)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.close()
        self.thread.join(timeout=10)


def wait_for(check, timeout: float = 10.0, what: str = "condition"):
    """Poll ``check`` every 50 ms until it returns something true (returned), or fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def screenshot_dir() -> Path:
    path = OUT / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def copy_log(src_db: Path, dst: Path) -> Path:
    shutil.copytree(src_db.parent, dst)
    return dst / src_db.name
