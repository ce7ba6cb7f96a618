"""`fieldear status`: running?, last heartbeat and event, overruns, disk, CPU temperature."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable

from runtime.field.heartbeat import THERMAL_ROOT, cpu_temperature, disk_free_mb

log = logging.getLogger(__name__)


SYSTEMD_RUN_DIR = Path("/run/systemd/system")


def service_state(service: str, run: Callable | None = None, booted: bool | None = None) -> str | None:
    """``systemctl is-active SERVICE`` ('active', 'inactive', 'failed', ...), or None without systemd."""
    import subprocess

    if booted is None:
        booted = SYSTEMD_RUN_DIR.is_dir()
    systemctl = shutil.which("systemctl")
    if not booted or systemctl is None:
        return None
    runner = run or subprocess.run
    try:
        proc = runner([systemctl, "is-active", service], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("systemctl is-active %s failed: %s", service, exc)
        return None
    return (proc.stdout or "").strip() or "unknown"


# a backlog whose oldest row is older than this is listed as a problem (broker, network or collector down?)
OUTBOX_STALE_S = 3600.0


def collect_status(db: Path, now: float, service: str = "fieldear", every_s: float | None = None,
                   state: str | None | object = ..., thermal_root: Path = THERMAL_ROOT) -> dict:
    """What `fieldear status` shows: running?, last heartbeat and event, overruns, disk, CPU temperature.

    Running is decided by systemd when it manages the machine (``state``: injected for tests), else by the
    log: the latest run has not ended and its last heartbeat is recent (2 intervals + 30 s).
    """
    import sqlite3

    from runtime.store.queries import count_rows, latest_event, latest_health, runs
    from runtime.store.schema import connect, parse_utc

    if state is ...:
        state = service_state(service)
    out: dict = {"db": str(db), "service": service, "systemd_state": state, "running": False, "ok": False,
                 "how": "systemd" if state is not None else "heartbeat", "problems": [],
                 "disk_free_mb": disk_free_mb(Path(db).parent), "cpu_temp_c": cpu_temperature(thermal_root),
                 "heartbeat": None, "heartbeat_age_s": None, "last_event": None, "run": None, "outbox": None}
    if Path(db).is_file():
        try:
            conn = connect(db, readonly=True, timeout=5)
            try:
                out["heartbeat"] = latest_health(conn)
                if out["heartbeat"] is not None:
                    out["heartbeat_age_s"] = round(now - parse_utc(out["heartbeat"]["t_utc"]), 1)
                out["last_event"] = latest_event(conn)
                all_runs = runs(conn)
                out["run"] = all_runs[-1] if all_runs else None
                out["events_total"] = count_rows(conn, "events")
                from runtime.fleet.outbox import backlog_summary

                out["outbox"] = backlog_summary(conn, now)  # None: this device does not report to a collector
            finally:
                conn.close()
        except (sqlite3.Error, ValueError) as exc:
            out["problems"].append(f"cannot read the log database: {exc}")
    else:
        out["problems"].append(f"no log database at {db}")
    out["logging_suspended"] = _logging_state(Path(db))
    if out["logging_suspended"]:
        ls = out["logging_suspended"]
        out["problems"].append(f"logging suspended: disk full or log not writable since {ls['suspended_since']}, "
                               f"{ls.get('rows_lost', 0)} rows lost ({ls.get('error', '')})")
    beat = out["heartbeat"] or {}
    interval = float(every_s or beat.get("every_s") or 300.0)
    fresh = out["heartbeat_age_s"] is not None and out["heartbeat_age_s"] <= 2 * interval + 30
    if state is not None:
        out["running"] = state in ("active", "reloading")
        if not out["running"]:
            out["problems"].append(f"service {service} is {state}")
    else:
        run_open = out["run"] is not None and not out["run"].get("ended_utc")
        out["running"] = bool(run_open and fresh)
        if not out["running"]:
            if out["run"] is not None and out["run"].get("ended_utc"):
                out["problems"].append(f"the last listen run ended at {out['run']['ended_utc']}")
            elif out["heartbeat"]:
                out["problems"].append(f"no heartbeat for {_age(out['heartbeat_age_s'])} (killed or hung?)")
            else:
                out["problems"].append("no heartbeat logged")
    if out["running"] and beat.get("kind") != "stop" and not fresh:
        if out["heartbeat_age_s"] is None:  # running under systemd, nothing logged yet
            out["problems"].append("no heartbeat logged")
        else:
            out["problems"].append(f"last heartbeat {out['heartbeat_age_s']:.0f} s ago (expected every {interval:.0f} s)")
    if beat.get("watchdog_stalled"):
        out["problems"].append("audio stalled at the last heartbeat")
    box = out["outbox"]
    if box and box["total"] and (box["oldest_age_s"] or 0) > OUTBOX_STALE_S:
        out["problems"].append(f"outbox: {box['total']} rows not acknowledged by the collector, the oldest from "
                               f"{_age(box['oldest_age_s'])} ago")
    for key in ("overruns", "dropped_blocks", "dropped_rows", "write_errors"):
        if beat.get(key):
            out["problems"].append(f"{key}: {beat[key]}")
    out["ok"] = bool(out["running"] and not beat.get("watchdog_stalled"))
    return out


def _logging_state(db: Path) -> dict | None:
    """The writer's state file (runtime.store.writer): a dict while logging is suspended, else None."""
    import json

    from runtime.paths import logging_state_path

    try:
        state = json.loads(logging_state_path(db).read_text().strip() or "{}")
    except (OSError, ValueError):
        return None
    return state if state.get("suspended_since") else None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def format_status(s: dict) -> str:
    beat = s["heartbeat"] or {}
    how = f"systemd: {s['systemd_state']}" if s["systemd_state"] is not None else "from the log's heartbeat"
    lines = [f"fieldear: {'running' if s['running'] else 'NOT running'} ({how})", f"log:        {s['db']}"]
    if beat:
        lines.append(f"heartbeat:  {beat['t_utc']} ({_age(s['heartbeat_age_s'])} ago, {beat.get('kind')}): "
                     f"up {_age(beat.get('uptime_s'))}, {beat.get('blocks', 0)} blocks, {beat.get('events', 0)} events, "
                     f"{beat.get('overruns', 0)} overruns, {beat.get('dropped_blocks', 0)} dropped blocks")
        lines.append(f"model:      {str(beat.get('model_sha') or '?')[:12]}   memory: {beat.get('rss_mb')} MB   "
                     f"log size: {beat.get('db_mb')} MB")
    ev = s["last_event"]
    lines.append(f"last event: {ev['start_utc']} {ev['label']} (peak {ev['peak']:.2f})" if ev else "last event: none")
    box = s.get("outbox")
    if box is not None:
        if box["total"]:
            p = box["pending"]
            lines.append(f"outbox:     {box['total']} not acknowledged by the collector ({p['events']} events, "
                         f"{p['health']} health, {p['reviews']} reviews), oldest {box['oldest_utc']} "
                         f"({_age(box['oldest_age_s'])} ago)")
        else:
            lines.append("outbox:     empty (the collector acknowledged everything)")
    disk = f"{s['disk_free_mb'] / 1000:.1f} GB" if s["disk_free_mb"] is not None else "?"
    temp = f"{s['cpu_temp_c']:.1f} C" if s["cpu_temp_c"] is not None else "n/a"
    lines.append(f"disk free:  {disk}   CPU temperature: {temp}")
    for problem in s["problems"]:
        lines.append(f"problem:    {problem}")
    return "\n".join(lines)
