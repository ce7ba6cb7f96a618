"""Web bench: what `fieldear serve` costs on the device.

A real `fieldear listen --file runtime/demo/demo.wav --clips` log is extended to ``n_events`` events by copying
its rows (each copy keeps a real saved clip), then the real CLI `fieldear serve` (waitress) is started on a free
port and measured from outside:

- ``detections_100_ms``: the detections page with 100 rows, median (and p90) of 20 GETs after one warm-up; the
  row images are separate requests (``spectrogram_cold_ms``: the first render of one clip; ``_cached_ms``: again);
- ``idle_cpu_pct``: the server's CPU time over 30 s with no requests, as % of one core (``/proc/PID/stat``);
- ``rss_mb``: the server's resident memory (``/proc/PID/status`` VmRSS) right after start, after the pages and
  images, and after the idle window; ``helper_rss_mb``: the spectrogram helper process (numpy + the frontend),
  which the server starts on the first image request and which exits after 60 s without one.

Targets (issue 13): idle <= 1 % of one core, <= 60 MB RSS, 100 rows <= 300 ms.
Run: ``python -m tests.bench.bench_web [--out bench/results]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "runtime" / "demo" / "demo.wav"
TARGETS = {"idle_cpu_pct": 1.0, "rss_mb": 60.0, "detections_100_ms": 300.0}

log = logging.getLogger("bench_web")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_log(work: Path, n_events: int) -> Path:
    db = work / "fieldear.db"
    if db.exists():
        db.unlink()
    subprocess.run([sys.executable, "-m", "runtime.cli", "listen", "--file", str(DEMO), "--db", str(db), "--clips",
                    "-q"], check=True, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    conn = sqlite3.connect(db)
    cols = "label, start_utc, end_utc, start_s, end_s, peak, mean, model_sha, device_id, source, settings_json, clip_path"
    with conn:
        base = conn.execute(f"SELECT {cols} FROM events ORDER BY id").fetchall()
        have = len(base)
        while have < n_events:
            conn.executemany(f"INSERT INTO events({cols}) VALUES ({', '.join('?' * 12)})", base[: n_events - have])
            have = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    conn.close()
    return db


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not ended within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """Resident memory of ``pid`` in MB (``key="VmHWM"``: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def get(url: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read()
    return (time.perf_counter() - t) * 1000, body


@contextlib.contextmanager
def served(db: Path):
    """The real CLI `fieldear serve --db DB` on a free port: yields (process, base url) once it answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--db", str(db), "--port", str(port), "-q"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(base + "/api/csrf")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("fieldear serve did not start")
                time.sleep(0.1)
        time.sleep(1.0)
        yield proc, base
    finally:
        stop_process(proc)


def measure_server(proc, base: str, gets: int = 20, idle_s: float = 30.0) -> dict:
    """Page timings of a running server (GETs from outside), then its idle CPU and RSS (``/proc``)."""
    rss_start = rss_mb(proc.pid)
    get(base + "/detections?limit=100")  # warm-up: templates compiled
    times = []
    for _ in range(gets):
        ms, body = get(base + "/detections?limit=100")
        times.append(ms)
    rows = body.count(b'<tr data-id="')
    api_times = [get(base + "/api/events?limit=100")[0] for _ in range(gets)]
    event_id = json.loads(get(base + "/api/events?limit=1")[1])["events"][0]["id"]
    spec_cold, png = get(f"{base}/api/events/{event_id}/spectrogram.png")
    spec_cached = statistics.median(get(f"{base}/api/events/{event_id}/spectrogram.png")[0] for _ in range(5))
    live_ms = statistics.median(get(base + "/live")[0] for _ in range(5))
    rss_pages = rss_mb(proc.pid)
    helpers = children(proc.pid)
    helper_rss = rss_mb(helpers[0]) if helpers else None
    time.sleep(2.0)
    hz = os.sysconf("SC_CLK_TCK")
    c0, t0 = cpu_ticks(proc.pid), time.monotonic()
    h0 = cpu_ticks(helpers[0]) if helpers else 0
    time.sleep(idle_s)
    c1, t1 = cpu_ticks(proc.pid), time.monotonic()
    h1 = cpu_ticks(helpers[0]) if helpers and Path(f"/proc/{helpers[0]}").exists() else h0
    idle = 100.0 * (c1 - c0) / hz / (t1 - t0)
    helper_idle = 100.0 * (h1 - h0) / hz / (t1 - t0)
    rss_idle = rss_mb(proc.pid)
    times.sort()
    result = {
        "rows_on_page": rows,
        "detections_100_ms": round(statistics.median(times), 1),
        "detections_100_p90_ms": round(times[int(0.9 * (len(times) - 1))], 1),
        "api_events_100_ms": round(statistics.median(api_times), 1),
        "live_ms": round(live_ms, 1),
        "spectrogram_cold_ms": round(spec_cold, 1), "spectrogram_cached_ms": round(spec_cached, 1),
        "spectrogram_png_bytes": len(png),
        "idle_cpu_pct": round(idle, 2), "idle_window_s": idle_s,
        "rss_mb_at_start": rss_start, "rss_mb_after_pages": rss_pages, "rss_mb_after_idle": rss_idle,
        "rss_mb": max(rss_start, rss_pages, rss_idle),
        "helper_rss_mb": helper_rss, "helper_idle_cpu_pct": round(helper_idle, 2),
        "targets": TARGETS,
    }
    result["meets_targets"] = {k: result[k] <= v for k, v in TARGETS.items()}
    return result


def main(out_dir, n_events: int = 200, gets: int = 20, idle_s: float = 30.0) -> dict:
    out = Path(out_dir)
    work = out / "web_work"
    work.mkdir(parents=True, exist_ok=True)
    db = make_log(work, n_events)
    with served(db) as (proc, base):
        result = {"events_in_log": n_events, **measure_server(proc, base, gets, idle_s)}
    (out / "bench_web.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--idle-s", type=float, default=30.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(main(args.out, idle_s=args.idle_s), indent=2))
