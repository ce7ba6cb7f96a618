"""Studio bench: the import and labelling steps of the 4 labels x 25 clips flow (ESC-10 dog, rain,
crackling_fire, rooster from ../shared), against the real `fieldear serve --projects` (waitress), measured from
outside over HTTP as the page does them:

- ``upload_100_s``: 100 files uploaded one request each (the page's drop / file picker path), and the median per file;
- ``folder_import_100_s``: the same 100 files imported from a folder on disk in one request;
- ``label_page_100_ms``: the label page with 100 clips (median of 5, after a warm-up);
- ``thumbnails_100_cold_s`` / ``_cached_ms``: the 100 spectrogram thumbnails, first drawn, then from the cache;
- ``label_4x25_ms``: four requests labelling 25 clips each (multi-select);
- ``rss_mb``: the server's resident memory after all that.

Run: ``python -m tests.bench.bench_studio [--out bench/results]``.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tests.bench.bench_web import free_port, rss_mb, stop_process

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FIELDEAR_SHARED", ROOT.parent / "shared" / "data"))
LABELS = ("dog", "rain", "crackling_fire", "rooster")
PER_LABEL = 25

log = logging.getLogger("bench_studio")


class Client:
    """A browser's session: cookie + CSRF token, JSON and raw-body POSTs."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.token = ""

    def get(self, path: str) -> tuple[float, bytes]:
        t = time.perf_counter()
        with self.opener.open(self.base + path, timeout=120) as r:
            body = r.read()
        return (time.perf_counter() - t) * 1000, body

    def post(self, path: str, body: bytes, content_type: str) -> tuple[float, dict]:
        req = urllib.request.Request(self.base + path, data=body, method="POST",
                                     headers={"Content-Type": content_type, "X-CSRF-Token": self.token})
        t = time.perf_counter()
        with self.opener.open(req, timeout=600) as r:
            data = r.read()
        ms = (time.perf_counter() - t) * 1000
        return ms, (json.loads(data) if r.headers.get_content_type() == "application/json" else {})

    def post_json(self, path: str, body: dict) -> tuple[float, dict]:
        return self.post(path, json.dumps(body).encode(), "application/json")


def clips() -> list[Path]:
    return [f for label in LABELS for f in sorted((SHARED / "esc10" / label).iterdir())[:PER_LABEL]]


def main(out_dir, repeats: int = 5) -> dict:
    out = Path(out_dir)
    work = out / "studio_work"
    shutil.rmtree(work, ignore_errors=True)
    files = clips()
    folder = work / "recordings"
    for f in files:
        (folder / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, folder / f.parent.name / f.name)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--projects", str(work / "projects"),
                             "--port", str(port), "-q"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(work)})
    c = Client(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                page = c.get("/studio/")[1].decode()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("fieldear serve --projects did not start")
                time.sleep(0.2)
        c.token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        for name in ("up", "folder"):
            c.post("/studio/projects", urllib.parse.urlencode({"name": name, "csrf_token": c.token}).encode(),
                   "application/x-www-form-urlencoded")
        t = time.perf_counter()
        per_file = [c.post(f"/studio/api/p/up/upload?name={urllib.parse.quote(f.name)}", f.read_bytes(),
                           "application/octet-stream")[0] for f in files]
        upload_s = time.perf_counter() - t
        folder_ms, imported = c.post_json("/studio/api/p/folder/import-folder", {"path": str(folder)})
        assert sum(r["stored"] is not None for r in imported["results"]) == len(files)
        c.get("/studio/p/up/label")
        label_page = statistics.median(c.get("/studio/p/up/label")[0] for _ in range(repeats))
        names = [f.name for f in files]
        t = time.perf_counter()
        for name in names:
            c.get(f"/studio/p/up/spectrogram/{urllib.parse.quote(name)}")
        thumbs_cold = time.perf_counter() - t
        t = time.perf_counter()
        for name in names:
            c.get(f"/studio/p/up/spectrogram/{urllib.parse.quote(name)}")
        thumbs_cached = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        for k, label in enumerate(LABELS):
            c.post_json("/studio/api/p/up/labels", {"files": names[k * PER_LABEL:(k + 1) * PER_LABEL], "label": label})
        label_ms = (time.perf_counter() - t) * 1000
        rss = rss_mb(proc.pid)
    finally:
        stop_process(proc)
    result = {
        "clips": len(files), "labels": list(LABELS),
        "upload_100_s": round(upload_s, 2), "upload_median_ms": round(statistics.median(per_file), 1),
        "folder_import_100_s": round(folder_ms / 1000, 2),
        "label_page_100_ms": round(label_page, 1),
        "thumbnails_100_cold_s": round(thumbs_cold, 2), "thumbnails_100_cached_ms": round(thumbs_cached, 1),
        "label_4x25_ms": round(label_ms, 1),
        "rss_mb": rss,
    }
    (out / "bench_studio.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(main(args.out), indent=2))
