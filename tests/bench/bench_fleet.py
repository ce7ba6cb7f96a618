"""Fleet bench: three devices replay recordings concurrently into one Mosquitto and one collector, with a
broker restart in the middle. Reports events logged on the devices vs in the central DB (must be equal),
duplicates in the central DB (must be 0) and the event-to-central-DB latency (median, p99).

Two ways to drive the devices:

- ``listen``: real ``fieldear listen --file REC --realtime --speed S --mqtt ... --device-id ...`` processes, each
  on its own recording (forest soundscapes from ../shared with ESC-10 clips mixed in at known times). Needs a
  model bundle (``--model``, default ``runtime/models/default``). Event time = when the row first appears in the
  device's log (the bench polls each log every 5 ms, read-only).
- ``simulated``: each device thread writes the same recordings' clip times as events into a real
  ``runtime.store.Store`` at the replay pace, with the real ``OutboxHook``/``MqttSink`` sender, exactly as the
  listener calls it. Event time = the commit time of the row.

The broker (persistence on, as Debian ships it) is stopped with SIGTERM once the devices have logged half of
the clips they will hear, and started again ``down_s`` later. Latency = central ``received_ts`` (collector
clock, same host) - event time; it includes the outbox wait during the outage and the senders' reconnect
backoff (reported separately for events logged while the broker was up). Run: ``python -m tests.bench.bench_fleet [--mode listen|simulated|auto] [--out bench/results]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FIELDEAR_SHARED", ROOT.parent / "shared" / "data"))
DEFAULT_MODEL = ROOT / "runtime" / "models" / "default"
CLIP_LABELS = ("dog", "rooster", "crying_baby", "chainsaw", "sneezing", "clock_tick", "helicopter")
RATE = 16000

log = logging.getLogger("bench_fleet")


@dataclass
class Recording:
    path: Path
    seconds: float
    clips: list[tuple[float, float, str]]  # (start_s, end_s, label) of the mixed-in ESC-10 clips


def make_recordings(out: Path, devices: int, seconds: float, seed: int = 7) -> list[Recording]:
    """One WAV per device: consecutive forest soundscape files (different per device) with ESC-10 clips
    mixed in every 6-10 s at 0 dB-ish; the clip plan is the replay's ground truth."""
    from runtime.audio.files import read_audio

    rng = random.Random(seed)
    scapes = sorted((SHARED / "soundscapes" / "forest_24h").glob("*.wav"))
    if not scapes:
        raise FileNotFoundError(f"no soundscapes under {SHARED / 'soundscapes' / 'forest_24h'}")
    clips = {lab: sorted((SHARED / "esc10" / lab).glob("*.wav")) for lab in CLIP_LABELS}
    out.mkdir(parents=True, exist_ok=True)
    recs = []
    per = int(np.ceil(seconds / 10.0))
    for d in range(devices):
        parts = [read_audio(scapes[(d * per + i) % len(scapes)], target_rate=RATE)[0] for i in range(per)]
        x = np.concatenate(parts)[: int(seconds * RATE)].astype(np.float32)
        plan = []
        t = rng.uniform(2.0, 4.0)
        while t + 5.0 < seconds:
            label = rng.choice(CLIP_LABELS)
            clip, _ = read_audio(rng.choice(clips[label]), target_rate=RATE)
            clip = clip[: int(5.0 * RATE)]
            a = int(t * RATE)
            scale = 0.5 * (np.sqrt(np.mean(x[a:a + len(clip)] ** 2)) + 1e-3) / (np.sqrt(np.mean(clip ** 2)) + 1e-6)
            x[a:a + len(clip)] += np.clip(scale, 0.5, 20.0) * clip
            plan.append((round(t, 3), round(t + len(clip) / RATE, 3), label))
            t += len(clip) / RATE + rng.uniform(1.0, 5.0)
        path = out / f"device-{d + 1}.wav"
        pcm = (np.clip(x / max(1.0, float(np.max(np.abs(x)))), -1, 1) * 32767).astype("<i2")
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.tobytes())
        recs.append(Recording(path, len(x) / RATE, plan))
    return recs


class LogWatcher:
    """Polls device logs (read-only) and records when each event row first appears."""

    def __init__(self, dbs: dict[str, Path], every_s: float = 0.005):
        self.dbs = dbs
        self.every_s = every_s
        self.first_seen: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        last = {d: 0 for d in self.dbs}
        conns: dict[str, sqlite3.Connection] = {}
        while not self._stop.is_set():
            for dev, path in self.dbs.items():
                if dev not in conns:
                    if not path.exists():
                        continue
                    try:
                        conns[dev] = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
                    except sqlite3.Error:
                        continue
                try:
                    rows = conns[dev].execute("SELECT id FROM events WHERE id > ? ORDER BY id", (last[dev],)).fetchall()
                except sqlite3.Error:  # table not created yet
                    continue
                now = time.time()
                for (i,) in rows:
                    self.first_seen.setdefault((dev, i), now)
                    last[dev] = i
            self._stop.wait(self.every_s)
        for c in conns.values():
            c.close()


def simulated_device(device: str, db: Path, address: str, rec: Recording, speed: float, t0: float,
                     commit_times: dict, drain_s: float, rng: random.Random, beat_s: float = 2.0,
                     backoff_s: tuple[float, float] = (0.2, 2.0), ack_timeout_s: float | None = None) -> dict:
    """A device that 'hears' its recording's clips at replay pace: Store.add_event + the real OutboxHook
    (a health row every ``beat_s``, as the field area's heartbeat hook writes them)."""
    from runtime.fleet.mqtt import MqttSettings, MqttSink
    from runtime.fleet.outbox import OutboxHook
    from runtime.store.schema import utc_iso
    from runtime.store.writer import Store

    store = Store(db, device_id=device, source=f"file:{rec.path.name}", model_sha="simulated",
                  settings={"mode": "simulated"}, window_every=0)
    sink = MqttSink(db, MqttSettings.from_config(None, address), device, backoff_s=backoff_s, rng=rng,
                    ack_timeout_s=ack_timeout_s)
    hook = OutboxHook(sink, drain_timeout_s=drain_s)
    hook.on_start(None)

    def written(row):
        commit_times[(device, row["id"])] = time.time()
        hook.on_event(None, row)

    n = 0
    next_beat = time.time()

    def wait_until(due):
        nonlocal next_beat
        while True:
            now = time.time()
            if now >= next_beat:
                store.add_health({"simulated": True, "events": n}, t_utc=now)
                hook.on_tick(None, now)
                next_beat = now + beat_s
            if now >= due:
                return
            time.sleep(min(due, next_beat) - now)

    for start_s, end_s, label in rec.clips:
        wait_until(t0 + end_s / speed)  # an event is logged when it ends
        store.add_event({"label": label, "start_utc": utc_iso(t0 + start_s / speed), "end_utc": utc_iso(time.time()),
                         "start_s": start_s, "end_s": end_s, "peak": 0.9, "mean": 0.8}, on_written=written)
        n += 1
    wait_until(t0 + rec.seconds / speed)
    hook.on_stop(None)
    store.close()
    return {"events": n, "drained": hook.drained, "connects": sink.connects}


def _listen_device(device: str, db: Path, address: str, rec: Recording, speed: float, model: Path,
                   drain_s: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "runtime.cli", "-q", "listen", "--model", str(model), "--file", str(rec.path),
           "--realtime", "--speed", str(speed), "--db", str(db), "--device-id", device, "--mqtt", address,
           "--drain-timeout", str(drain_s), "--no-windows", "--json"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(np.floor(k)), int(np.ceil(k))
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def latency_summary(received: dict, logged: dict, down_from: float, down_to: float) -> dict:
    """Event-to-central-DB latency (``received[key] - logged[key]``, unix seconds, keys present in both): all
    events, and those logged while the broker was up (outside ``[down_from, down_to]``) on their own."""
    keys = [k for k in received if k in logged]
    lat = [received[k] - logged[k] for k in keys]
    down = {k for k in keys if down_from <= logged[k] <= down_to}
    up = [received[k] - logged[k] for k in keys if k not in down]

    def ms(xs: list[float]) -> dict:
        return {"n": len(xs), "median": round(1000 * statistics.median(xs), 1) if xs else None,
                "p99": round(1000 * percentile(xs, 0.99), 1) if xs else None}

    return {"latency_ms": {**ms(lat), "max": round(1000 * max(lat), 1) if lat else None,
                           "events_logged_while_broker_down": len(down)},
            "latency_ms_events_logged_while_broker_up": ms(up)}


def run(out_dir: Path, mode: str = "auto", devices: int = 3, seconds: float = 600.0, speed: float = 20.0,
        restart_at: float = 0.5, down_s: float = 3.0, model: Path | None = None, seed: int = 7) -> dict:
    from tests.fleet.broker import Broker, CollectorThread

    out_dir = Path(out_dir)
    work = out_dir / "fleet_work"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    model = Path(model) if model else DEFAULT_MODEL
    if mode == "auto":
        mode = "listen" if (model / "model.json").exists() else "simulated"
    if mode == "listen" and not (model / "model.json").exists():
        raise FileNotFoundError(f"listen mode needs a model bundle: {model}")
    recs = make_recordings(work / "recordings", devices, seconds, seed)
    names = [f"field-{i + 1:02d}" for i in range(devices)]
    dbs = {n: work / f"{n}.db" for n in names}
    replay_s = seconds / speed
    drain_s = 30.0
    broker = Broker(work / "broker")
    broker.start()
    central = work / "central.db"
    results: dict = {}
    try:
        with CollectorThread(central, broker.address) as col:
            t0 = time.time()
            commit_times: dict = {}
            watcher = None
            device_results: dict = {}
            if mode == "simulated":
                threads = []
                for i, n in enumerate(names):
                    def target(n=n, rec=recs[i], i=i):
                        device_results[n] = simulated_device(n, dbs[n], broker.address, rec, speed, t0, commit_times,
                                                             drain_s, random.Random(seed + i))
                    th = threading.Thread(target=target, daemon=True)
                    th.start()
                    threads.append(th)
            else:
                watcher = LogWatcher(dbs)
                watcher.start()
                procs = {n: _listen_device(n, dbs[n], broker.address, recs[i], speed, model, drain_s)
                         for i, n in enumerate(names)}
            # broker restart in the middle: once the devices have logged half of the clips they will hear (the
            # replay may run slower than its nominal pace when the CPU is short), at most 10x the nominal time
            planned = sum(len(r.clips) for r in recs)
            deadline = t0 + 10 * replay_s
            while sum(count_rows(dbs[n]) for n in names) < restart_at * planned and time.time() < deadline:
                time.sleep(0.05)
            t_stop = time.time() - t0
            events_before_stop = sum(count_rows(dbs[n]) for n in names)
            broker.stop()
            time.sleep(down_s)
            broker.start()
            t_start = time.time() - t0
            if mode == "simulated":
                for th in threads:
                    th.join(replay_s + drain_s + 60)
                    assert not th.is_alive(), "simulated device did not finish"
            else:
                for n, p in procs.items():
                    stdout, stderr = p.communicate(timeout=replay_s * 4 + drain_s + 120)
                    if p.returncode != 0:
                        raise RuntimeError(f"listen for {n} failed ({p.returncode}): {stderr[-2000:]}")
                    summary = json.loads(stdout[stdout.index("{"):])
                    device_results[n] = {"events": summary["events"], "x_realtime": summary["x_realtime"],
                                         "audio_s": summary["audio_s"]}
            wall = time.time() - t0
            # wait (bounded) until the collector has everything the devices logged
            expected = sum(count_rows(dbs[n]) for n in names)
            expected_health = sum(count_rows(dbs[n], "health") for n in names)
            deadline = time.time() + 30
            while (col.stats.events < expected or col.stats.health < expected_health) and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # late duplicates would show up now
            if watcher is not None:
                watcher.stop()
                commit_times = watcher.first_seen
            stats = col.stats
    finally:
        broker.stop()

    dev_rows = {n: device_rows(dbs[n]) for n in names}
    cen = sqlite3.connect(str(central))
    try:
        cen_rows = {n: [tuple(r) for r in cen.execute(
            "SELECT event_id, label, start_s, end_s FROM events WHERE device_id = ? ORDER BY event_id", (n,))]
            for n in names}
        total, distinct = cen.execute("SELECT COUNT(*), COUNT(DISTINCT device_id || ':' || event_id) FROM events").fetchone()
        received = {(d, e): ts for d, e, ts in cen.execute("SELECT device_id, event_id, received_ts FROM events")}
    finally:
        cen.close()
    results = {
        "bench": "fleet",
        "mode": mode,
        "driver": ("fieldear listen --file --realtime subprocesses" if mode == "listen"
                   else "simulated devices: runtime.store.Store + OutboxHook/MqttSink threads"),
        "model": str(model) if mode == "listen" else None,
        "model_json_sha256": json.loads((model / "model.json").read_text()).get("json_sha256") if mode == "listen" else None,
        "devices": devices,
        "recording_s_per_device": seconds,
        "replay_speed": speed,
        "broker_restart": {"stopped_at_s": round(t_stop, 2), "started_at_s": round(t_start, 2), "down_s": down_s,
                           "device_events_before_stop": events_before_stop, "clips_planned": planned},
        "wall_s": round(wall, 2),
        "events_on_devices": {n: len(dev_rows[n]) for n in names},
        "events_in_central": {n: len(cen_rows[n]) for n in names},
        "events_on_devices_total": sum(len(v) for v in dev_rows.values()),
        "events_in_central_total": total,
        "equal": all(dev_rows[n] == cen_rows[n] for n in names),
        "duplicates_in_central": total - distinct,
        "redelivered_messages_ignored": stats.duplicates,
        "conflicts": stats.conflicts,
        **latency_summary(received, commit_times, t0 + t_stop, t0 + t_start),
        "health_on_devices_total": sum(count_rows(dbs[n], "health") for n in names),
        "health_in_central_total": stats.health,
        "device_runs": device_results,
        "collector": {"events": stats.events, "health": stats.health, "status": stats.status,
                      "connects": stats.connects, "rejected": stats.rejected},
        "mosquitto": "persistence on (collector has a persistent session); restart = SIGTERM, start",
    }
    return results


def count_rows(db: Path, table: str = "events") -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(str(db), timeout=5)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:  # the listener has not created its tables yet
        return 0
    finally:
        conn.close()


def device_rows(db: Path) -> list[tuple]:
    conn = sqlite3.connect(str(db))
    try:
        return [tuple(r) for r in conn.execute("SELECT id, label, start_s, end_s FROM events ORDER BY id")]
    finally:
        conn.close()


def main(out_dir="bench/results", keep_work: bool = False, **kwargs) -> dict:
    results = run(Path(out_dir), **kwargs)
    if not keep_work:  # recordings and logs (tens of MB)
        import shutil

        shutil.rmtree(Path(out_dir) / "fleet_work", ignore_errors=True)
    out = Path(out_dir) / "fleet.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    log.info("wrote %s", out)
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--mode", choices=("auto", "listen", "simulated"), default="auto")
    ap.add_argument("--model", default=None, help="bundle for listen mode (default runtime/models/default)")
    ap.add_argument("--seconds", type=float, default=600.0, help="recording length per device")
    ap.add_argument("--speed", type=float, default=20.0, help="replay pace (x real time)")
    ap.add_argument("--down", type=float, default=3.0, help="broker outage seconds")
    ap.add_argument("--keep-work", action="store_true", help="keep recordings, device logs and central DB")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    r = main(a.out, keep_work=a.keep_work, mode=a.mode, model=a.model, seconds=a.seconds, speed=a.speed, down_s=a.down)
    print(json.dumps({k: r[k] for k in ("mode", "events_on_devices_total", "events_in_central_total", "equal",
                                        "duplicates_in_central", "latency_ms", "latency_ms_events_logged_while_broker_up",
                                        "health_on_devices_total", "health_in_central_total")}, indent=2))
