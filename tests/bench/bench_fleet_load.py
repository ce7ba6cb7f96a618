"""Fleet load bench (issue 16 item 5): ``devices`` simulated devices (default 200, all on 127.0.0.1) through one
Mosquitto (the fixture's config: persistence on) into one ``fieldear collect`` process on PostgreSQL (the test
fixture's throwaway server from the Debian packages, tests/fleet/postgres.py), with a broker SIGKILL in the
middle, restarted ``down_s`` later.

Each device is ``bench_fleet.simulated_device``: its own device log (``runtime.store.Store``) and the product's
outbox sender (``OutboxHook``/``MqttSink``, the cursor moved only by the collector's end-to-end acks), with the
product's reconnect backoff and ack timeout unless told otherwise. A device logs an event every
``event_every_s`` (x0.5-1.5, seeded) for ``seconds``, a health row every ``health_every_s``, then drains its
outbox (bounded). The devices are threads in ``procs`` worker processes, all started at one t0.

Measured: events/s into the central DB (before the kill, and over the whole run), end-to-end latency (central
``received_ts`` - the device's commit time, one host clock) median and p99 for events logged before the kill,
while the broker was down, and all but those; the collector's CPU (seconds, % of one core, per 1000 events,
from /proc/<pid>/stat) and peak RSS (VmHWM); the broker's after its restart; at the end events on the devices
vs in the centre, duplicates and lost (both must be 0). A baseline of 3 devices at the same per-device rate runs
first in the same invocation; ``ratios`` compares the two.

    nice python -m tests.bench.bench_fleet_load [--devices 200] [--seconds 90] [--procs 4] [--out bench/results]

writes ``fleet_load.json`` in --out (``make bench`` runs it through tests/bench/run.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import random
import resource
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tests.bench.bench_fleet import (
    CLIP_LABELS,
    Recording,
    count_rows,
    device_rows,
    latency_summary,
    simulated_device,
)

log = logging.getLogger("bench_fleet_load")


@dataclass(frozen=True)
class LoadSettings:
    devices: int = 200
    seconds: float = 90.0  # how long every device logs events
    event_every_s: float = 3.0  # mean interval between one device's events
    health_every_s: float = 30.0
    procs: int = 4  # worker processes the device threads are spread over
    kill_at: float = 0.5  # broker SIGKILL at this fraction of ``seconds``
    down_s: float = 3.0
    backoff_s: tuple[float, float] | None = None  # None: MqttSink's default
    ack_timeout_s: float | None = None  # None: MqttSettings' default
    drain_timeout_s: float = 120.0  # per device at its end, and again for the central DB
    scrape_every_s: float = 5.0  # the collector's /metrics, as Prometheus would (its default is 15 s)
    seed: int = 7


def make_plans(names: list[str], seconds: float, every_s: float, seed: int) -> list[Recording]:
    """Each device's events (start_s, end_s, label) over ``seconds``: one every ``every_s`` x U(0.5, 1.5)."""
    rng = random.Random(seed)
    plans = []
    for name in names:
        clips, t = [], rng.uniform(0.2, 1.0) * every_s
        while True:
            end = t + rng.uniform(0.2, 0.4) * every_s
            if end >= seconds:
                break
            clips.append((round(t, 3), round(end, 3), rng.choice(CLIP_LABELS)))
            t += every_s * rng.uniform(0.5, 1.5)
        plans.append(Recording(Path(f"{name}.plan"), seconds, clips))
    return plans


def _worker(names: list[str], seeds: list[int], plans: list[Recording], work: str, address: str, s: LoadSettings,
            ready, start, t0, out: str) -> None:
    """One worker process: its devices as threads from t0 on; writes their summaries and commit times to ``out``."""
    logging.basicConfig(level=logging.WARNING, filename=str(Path(out).with_suffix(".log")),
                        format="%(asctime)s %(threadName)s %(name)s: %(message)s")
    import paho.mqtt.client  # noqa: F401 - loaded before t0, not by the first device thread

    ready.put(os.getpid())
    start.wait()
    commit_times: dict = {}
    results: dict = {}
    backoff = {} if s.backoff_s is None else {"backoff_s": s.backoff_s}

    def device(i: int) -> None:
        try:
            results[names[i]] = simulated_device(
                names[i], Path(work) / f"{names[i]}.db", address, plans[i], 1.0, t0.value, commit_times,
                s.drain_timeout_s, random.Random(seeds[i]), beat_s=s.health_every_s, ack_timeout_s=s.ack_timeout_s,
                **backoff)
        except Exception as exc:
            logging.getLogger("bench_fleet_load").exception("device %s failed", names[i])
            results[names[i]] = {"error": f"{type(exc).__name__}: {exc}"}

    threads = [threading.Thread(target=device, args=(i,), name=names[i]) for i in range(len(names))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    use = resource.getrusage(resource.RUSAGE_SELF)
    Path(out).write_text(json.dumps({"devices": results, "cpu_s": use.ru_utime + use.ru_stime,
                                     "logged": [[d, i, t] for (d, i), t in commit_times.items()]}))


class Usage:
    """CPU seconds since construction and memory of one process, from /proc/<pid>/stat and /status."""

    def __init__(self, pid: int):
        from tests.bench.bench_web import cpu_ticks

        self.pid, self.hz, self._ticks = pid, os.sysconf("SC_CLK_TCK"), cpu_ticks
        self.t0, self.c0 = time.time(), cpu_ticks(pid)

    def read(self) -> dict:
        from tests.bench.bench_web import rss_mb

        cpu_s = (self._ticks(self.pid) - self.c0) / self.hz
        wall = time.time() - self.t0
        return {"cpu_s": round(cpu_s, 2), "wall_s": round(wall, 1), "cpu_pct_of_one_core": round(100 * cpu_s / wall, 1),
                "rss_mb": rss_mb(self.pid), "peak_rss_mb": rss_mb(self.pid, "VmHWM")}


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """The collector's /metrics: {(sample name, sorted label items): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for fam in text_string_to_metric_families(text) for smp in fam.samples}


def _collector_up(port: int) -> bool:
    try:
        return scrape(port).get(("fieldear_collector_up", ())) == 1.0
    except OSError:
        return False


def _wait(predicate, timeout_s: float, step_s: float = 0.2) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())


def run_load(work: Path, s: LoadSettings, db_url: str) -> dict:
    """One run: broker, `fieldear collect` on ``db_url`` (an empty database), the devices, the kill; the figures.
    The collector's /metrics scrapes go to ``work/scrapes.jsonl`` (``[t, [[name, labels, value], ...]]`` a line)."""
    from runtime.fleet.central.store import open_store
    from tests.fleet.broker import Broker, CollectorProcess, free_port

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    names = [f"load-{i + 1:03d}" for i in range(s.devices)]
    plans = make_plans(names, s.seconds, s.event_every_s, s.seed)
    dbs = {n: work / f"{n}.db" for n in names}
    broker = Broker(work / "broker")
    broker.start()
    port = free_port()
    collector = CollectorProcess(db_url, broker.address, work / "collect.log", ("--metrics-port", str(port)))
    collector.start()
    ctx = multiprocessing.get_context("spawn")
    ready, start, t0v = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = max(1, min(s.procs, s.devices))
    groups = [list(range(p, s.devices, procs)) for p in range(procs)]
    outs = [work / f"worker-{p}.json" for p in range(procs)]
    workers = [ctx.Process(target=_worker, daemon=True, args=(
        [names[i] for i in g], [s.seed * 100003 + i for i in g], [plans[i] for i in g], str(work), broker.address, s,
        ready, start, t0v, str(outs[p]))) for p, g in enumerate(groups)]
    central = None
    timeline = []
    scrapes = open(work / "scrapes.jsonl", "w")  # closed in the finally below
    next_scrape = 0.0

    def keep_scrape() -> dict:
        m = scrape(port)
        scrapes.write(json.dumps([time.time(), [[n, dict(lab), v] for (n, lab), v in m.items()]]) + "\n")
        return m
    try:
        if not _wait(lambda: _collector_up(port), 60):
            raise RuntimeError(f"the collector did not subscribe: {(work / 'collect.log').read_text()[-2000:]}")
        for w in workers:
            w.start()
        for _ in workers:
            ready.get(timeout=180)
        central = open_store(db_url, readonly=True)
        usage = Usage(collector.pid)  # the run's CPU only, not the collector's start-up
        t0 = time.time() + 1.0
        t0v.value = t0
        start.set()
        log.info("%d devices in %d processes, %.0f s from t0; broker SIGKILL at %.0f s", s.devices, procs, s.seconds,
                 s.kill_at * s.seconds)

        def sample_until(until: float, stop=lambda: False) -> None:
            nonlocal next_scrape
            while time.time() < until and not stop():
                if time.time() >= next_scrape:
                    next_scrape = time.time() + s.scrape_every_s
                    try:
                        keep_scrape()
                    except OSError as exc:  # a slow answer under load: that scrape is missing, as in Prometheus
                        log.warning("scrape failed: %s", exc)
                n = central.execute("SELECT COUNT(*) FROM events").fetchone()[0]
                central.commit()  # PostgreSQL: a fresh snapshot on the next count
                timeline.append([round(time.time() - t0, 1), n, usage.read()["cpu_s"]])
                time.sleep(1.0)

        sample_until(t0 + s.kill_at * s.seconds)
        t_kill = time.time()
        broker.kill()
        sample_until(t_kill + s.down_s)
        broker.start()
        t_back = time.time()
        broker_usage = Usage(broker.proc.pid)
        sample_until(t0 + s.seconds + 2 * s.drain_timeout_s + 60, lambda: not any(w.is_alive() for w in workers))
        t_devices_done = time.time()
        for w in workers:
            w.join(5)
            if w.is_alive():
                w.terminate()
                raise RuntimeError("a device worker did not finish in time")
        # every row the devices logged in the central DB (bounded); late duplicates would show up meanwhile
        expected = sum(count_rows(dbs[n]) for n in names)
        expected_health = sum(count_rows(dbs[n], "health") for n in names)

        def complete() -> bool:
            ev, he = (central.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("events", "health"))
            central.commit()
            return ev >= expected and he >= expected_health

        drained = _wait(complete, s.drain_timeout_s)
        t_drained = time.time()
        time.sleep(1.0)
        collector_usage = usage.read()
        broker_after_restart = broker_usage.read()
        metrics = keep_scrape()
        rows = central.execute("SELECT device_id, generation, event_id, label, start_s, end_s, received_ts "
                               "FROM events ORDER BY device_id, event_id").fetchall()
        health_central = central.execute("SELECT COUNT(*) FROM health").fetchone()[0]
        central.commit()
    finally:
        scrapes.close()
        if central is not None:
            central.close()
        for w in workers:
            if w.is_alive():
                w.terminate()
        summary = collector.stop().strip().splitlines() if collector.proc else []
        broker.stop()

    logged: dict = {}
    device_runs: dict = {}
    device_cpu_s = 0.0
    for out in outs:
        part = json.loads(out.read_text())
        device_cpu_s += part["cpu_s"]
        device_runs.update(part["devices"])
        logged.update({(d, i): t for d, i, t in part["logged"]})
    dev = {n: device_rows(dbs[n]) for n in names}
    cen: dict[str, list] = {n: [] for n in names}
    for d, _g, e, label, a, b, _ts in rows:
        cen.setdefault(d, []).append((e, label, a, b))
    received = {(d, e): ts for d, _g, e, *_rest, ts in rows}
    on_devices = {(n, r[0]) for n in names for r in dev[n]}
    in_central = {(d, e) for d, _g, e, *_rest in rows}
    total = len(rows)
    distinct = len({(d, g, e) for d, g, e, *_rest in rows})
    steady_from = t0 + min(10.0, 0.2 * s.seconds)  # past the first events' start-up
    steady = [ts for ts in received.values() if steady_from <= ts < t_kill]
    per_second: dict[int, int] = {}
    for ts in received.values():
        per_second[int(ts - t0)] = per_second.get(int(ts - t0), 0) + 1
    n_dev = len(on_devices)
    lat = latency_summary(received, logged, t_kill, t_back)
    lat_before = latency_summary(received, {k: t for k, t in logged.items() if t < t_kill}, t_kill, t_back)
    return {
        "devices": s.devices,
        "processes": procs,
        "t0_unix": round(t0, 3),
        "seconds_logging": s.seconds,
        "events_on_devices": n_dev,
        "events_in_central": total,
        "equal": all(dev[n] == cen.get(n, []) for n in names),
        "duplicates_in_central": total - distinct,
        "lost": len(on_devices - in_central),
        "extra_in_central": len(in_central - on_devices),
        "health_on_devices": expected_health,
        "health_in_central": health_central,
        "drained": drained,
        "offered_events_per_s": round(n_dev / s.seconds, 1),
        "events_per_s_into_central_before_kill": (
            round(len(steady) / (t_kill - steady_from), 1) if t_kill > steady_from else None),
        "events_per_s_into_central_whole_run": round(total / (max(received.values()) - t0), 1) if received else None,
        "peak_events_per_s_into_central": max(per_second.values(), default=0),
        "broker_kill": {"killed_at_s": round(t_kill - t0, 2), "restarted_at_s": round(t_back - t0, 2),
                        "down_s": s.down_s, "signal": "SIGKILL (no persistence file written, no clean disconnects)"},
        "latency_ms_events_logged_before_kill": lat_before["latency_ms_events_logged_while_broker_up"],
        **lat,
        "collector": {**collector_usage,
                      "cpu_s_per_1000_events": round(1000 * collector_usage["cpu_s"] / total, 2) if total else None,
                      "summary": summary[-1] if summary else "",
                      "duplicates_ignored": metrics.get(("fieldear_collector_duplicates_total", ())),
                      "acks_sent": metrics.get(("fieldear_collector_acks_total", ())),
                      "connects": metrics.get(("fieldear_collector_connects_total", ()))},
        "broker_after_restart": broker_after_restart,
        "wall_s": {"devices_done": round(t_devices_done - t0, 1), "central_complete": round(t_drained - t0, 1)},
        "device_errors": {n: r["error"] for n, r in device_runs.items() if "error" in r},
        "device_connects_total": sum(r.get("connects", 0) for r in device_runs.values()),
        "devices_drained": sum(bool(r.get("drained")) for r in device_runs.values()),
        # the simulated devices' own cost (worker processes: device threads + senders), not the centre's
        "device_processes_cpu_s": round(device_cpu_s, 1),
        "timeline": timeline,  # [s since t0, central events, collector CPU s]
    }


def _preview(db_url: str, scrapes: Path, png: Path, r: dict) -> dict:
    """tests/bench/dashboard_preview.py on the load run's database and scrapes (recorded, never fatal)."""
    try:
        from tests.bench.dashboard_preview import render

        t_to = r["t0_unix"] + r["wall_s"]["central_complete"] + 5
        render(db_url, scrapes, png, r["t0_unix"] - 5, t_to,
               subtitle=f"{r['devices']} simulated devices, broker SIGKILLed at {r['broker_kill']['killed_at_s']:.0f} s "
                        f"and restarted at {r['broker_kill']['restarted_at_s']:.0f} s")
    except Exception as exc:  # the figures stand without the picture
        log.exception("dashboard preview failed")
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"png": str(png), "note": "a preview of the panels' data, not a Grafana screenshot"}


def _ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def main(out_dir="bench/results", keep_work: bool = False, **overrides) -> dict:
    import shutil

    from tests.fleet.postgres import Postgres, find_pg_bin

    s = LoadSettings(**overrides)
    bindir = find_pg_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries not found (bash .ci/system-deps.sh installs postgresql)")
    out_dir = Path(out_dir)
    work = out_dir / "fleet_load_work"
    shutil.rmtree(work, ignore_errors=True)
    base_s = replace(s, devices=min(3, s.devices), procs=1)
    with Postgres(bindir) as pg:
        log.info("--- baseline: %d devices", base_s.devices)
        base = run_load(work / "baseline", base_s, pg.new_database())
        log.info("--- load: %d devices", s.devices)
        url = pg.new_database()
        load = run_load(work / "load", s, url)
        preview = _preview(url, work / "load" / "scrapes.jsonl", out_dir / "fleet_dashboard_preview.png", load)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "bench": "fleet_load",
        "settings": asdict(s),
        "driver": "simulated devices: runtime.store.Store + OutboxHook/MqttSink threads in worker processes; "
                  "one Mosquitto (persistence on), one `fieldear collect` process on PostgreSQL",
        "load": load,
        "baseline": base,
        "dashboard_preview": preview,
        "ratios_load_over_baseline": {
            "devices": _ratio(load["devices"], base["devices"]),
            "events_per_s_into_central_before_kill": _ratio(load["events_per_s_into_central_before_kill"],
                                                            base["events_per_s_into_central_before_kill"]),
            "latency_median_before_kill": _ratio(load["latency_ms_events_logged_before_kill"]["median"],
                                                 base["latency_ms_events_logged_before_kill"]["median"]),
            "latency_p99_before_kill": _ratio(load["latency_ms_events_logged_before_kill"]["p99"],
                                              base["latency_ms_events_logged_before_kill"]["p99"]),
            "collector_cpu_s": _ratio(load["collector"]["cpu_s"], base["collector"]["cpu_s"]),
            "collector_cpu_s_per_1000_events": _ratio(load["collector"]["cpu_s_per_1000_events"],
                                                      base["collector"]["cpu_s_per_1000_events"]),
            "collector_peak_rss": _ratio(load["collector"]["peak_rss_mb"], base["collector"]["peak_rss_mb"]),
        },
    }
    out = out_dir / "fleet_load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    log.info("wrote %s", out)
    return results


def summary_lines(res: dict) -> list[str]:
    """The figures as markdown (bench.md of `make bench`, and this module's command line)."""
    def one(name: str, r: dict) -> list[str]:
        c, lb, ld, lu = (r["collector"], r["latency_ms_events_logged_before_kill"], r["latency_ms"],
                         r["latency_ms_events_logged_while_broker_up"])
        return [f"- **{name}: {r['devices']} devices** in {r['processes']} processes, {r['seconds_logging']:.0f} s: "
                f"{r['events_on_devices']} events on the devices, {r['events_in_central']} in the centre (equal "
                f"{r['equal']}), duplicates {r['duplicates_in_central']}, lost {r['lost']}; health "
                f"{r['health_on_devices']} / {r['health_in_central']}",
                f"  - into the central DB: {r['events_per_s_into_central_before_kill']} events/s before the kill "
                f"(offered {r['offered_events_per_s']}), {r['events_per_s_into_central_whole_run']} over the run, "
                f"peak {r['peak_events_per_s_into_central']}/s after the restart",
                f"  - latency median / p99: {lb['median']} / {lb['p99']} ms logged before the kill; "
                f"{lu['median']} / {lu['p99']} ms all but the outage's; {ld['median']} / {ld['p99']} ms all "
                f"({ld['events_logged_while_broker_down']} logged while the broker was down)",
                f"  - collector: {c['cpu_s']} s CPU ({c['cpu_pct_of_one_core']}% of one core, "
                f"{c['cpu_s_per_1000_events']} s per 1000 events), peak RSS {c['peak_rss_mb']} MB; the simulated "
                f"devices' processes {r['device_processes_cpu_s']} s CPU"]

    ratios = res["ratios_load_over_baseline"]
    return (["## Fleet load (simulated devices -> one Mosquitto, SIGKILLed mid-run -> `fieldear collect` on "
             "PostgreSQL)", ""] + one("load", res["load"]) + one("baseline", res["baseline"])
            + ["- load / baseline: " + ", ".join(f"{k} {v}" for k, v in ratios.items())])


if __name__ == "__main__":
    d = LoadSettings()
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_fleet_load", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--devices", type=int, default=d.devices)
    ap.add_argument("--seconds", type=float, default=d.seconds, help="how long each device logs events")
    ap.add_argument("--event-every", type=float, default=d.event_every_s, help="mean seconds between a device's events")
    ap.add_argument("--health-every", type=float, default=d.health_every_s)
    ap.add_argument("--procs", type=int, default=d.procs, help="worker processes holding the device threads")
    ap.add_argument("--down", type=float, default=d.down_s, help="seconds the broker stays down after its SIGKILL")
    ap.add_argument("--ack-timeout", type=float, default=None, help="devices' ack timeout (default: the product's)")
    ap.add_argument("--keep-work", action="store_true", help="keep the device logs, broker and collector logs")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    r = main(a.out, keep_work=a.keep_work, devices=a.devices, seconds=a.seconds, event_every_s=a.event_every,
             health_every_s=a.health_every, procs=a.procs, down_s=a.down, ack_timeout_s=a.ack_timeout)
    print("\n".join(summary_lines(r)))
