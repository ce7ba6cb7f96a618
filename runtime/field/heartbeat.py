"""Running unattended: systemd notify + watchdog, heartbeat rows, SIGHUP reload. All are listen hooks.

- ``NotifyHook``: ``READY=1`` once the model is loaded *and* audio flows; ``WATCHDOG=1`` (every half
  ``WatchdogSec``) only while audio keeps arriving: after ``[health] watchdog_stall_s`` without audio it stops
  feeding, so systemd kills and restarts the service; ``STATUS=`` with counts; ``STOPPING=1`` on stop.
- ``HeartbeatHook``: a ``health`` row every ``[health] every_s`` (and at start and stop): uptime, blocks,
  overruns, drops, events, disk free, CPU temperature (``/sys/class/thermal`` when present), RSS.
- ``Reloader``: SIGHUP (``systemctl reload fieldear``) sets a flag; the next tick re-reads the config in a
  background thread and, if the model bundle changed (e.g. deploy switched ``models/current``), loads it and
  hands it to ``listener.swap_model`` (which switches between two chunks: no audio is lost).

``runtime.listen.program.field_hooks(config, ...)`` makes all three.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from runtime.field.watchdog import NotifyHook
from runtime.listen.hooks import Hook

log = logging.getLogger(__name__)

THERMAL_ROOT = Path("/sys/class/thermal")
PROC_STATUS = Path("/proc/self/status")


# ---------------------------------------------------------------- system readings


def cpu_temperature(root: Path = THERMAL_ROOT) -> float | None:
    """CPU temperature in deg C from the kernel's thermal zones (the cpu zone if named), or None."""
    zones = sorted(root.glob("thermal_zone*")) if root.is_dir() else []
    best = None
    for zone in zones:
        try:
            millideg = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            kind = (zone / "type").read_text().strip().lower()
        except OSError:
            kind = ""
        value = round(millideg / 1000.0, 1)
        if "cpu" in kind or "soc" in kind:
            return value
        if best is None:
            best = value
    return best


def rss_mb(status: Path = PROC_STATUS) -> float | None:
    """Resident memory of this process in MB (VmRSS), or None where /proc is missing."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def disk_free_mb(path: Path) -> float | None:
    """Free space (for unprivileged users) on the filesystem holding ``path`` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return round(shutil.disk_usage(p).free / 1e6, 1)
    except OSError:
        return None


# ---------------------------------------------------------------- systemd notify + watchdog


# ---------------------------------------------------------------- heartbeat rows


class HeartbeatHook(Hook):
    """A ``health`` row at start, every ``every_s`` seconds, and at stop."""

    def __init__(self, every_s: float, location: str | None = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, thermal_root: Path = THERMAL_ROOT,
                 proc_status: Path = PROC_STATUS, notify: NotifyHook | None = None):
        self.every_s = float(every_s)
        self.location = location
        self.clock = clock
        self.monotonic = monotonic
        self.thermal_root = thermal_root
        self.proc_status = proc_status
        self.notify = notify
        self.started: float | None = None
        self.last: float | None = None
        self.rows = 0

    def snapshot(self, listener, kind: str) -> dict:
        now = self.monotonic()
        s, src, store = listener.stats, listener.source.stats, listener.store
        last_audio_age = None
        if s.last_audio is not None:
            last_audio_age = round(max(0.0, self.clock() - s.last_audio), 1)
        data = {
            "kind": kind,
            "pid": os.getpid(),
            "uptime_s": round(now - self.started, 1) if self.started is not None else 0.0,
            "source": listener.source.name,
            "audio_s": round(s.audio_s, 1),
            "blocks": s.blocks,
            "events": s.events,
            "events_by_label": dict(sorted(s.events_by_label.items())),
            "last_event_utc": s.last_event_utc,
            "last_audio_age_s": last_audio_age,
            "silent_s": round(getattr(s, "silent_s", 0.0), 1),  # the current run of digital silence
            "clipped_samples": getattr(s, "clipped_samples", 0),
            "overruns": src.overruns,
            "dropped_blocks": src.dropped_blocks,
            "reconnects": getattr(src, "reconnects", 0),
            "dropped_rows": store.dropped_rows,
            "write_errors": store.write_errors,
            "hook_errors": s.hook_errors,
            "model_swaps": s.model_swaps,
            "model_sha": store.model_sha,
            "db_mb": round(store.size_mb(), 2),
            "disk_free_mb": disk_free_mb(Path(store.path).parent),
            "cpu_temp_c": cpu_temperature(self.thermal_root),
            "rss_mb": rss_mb(self.proc_status),
            "load_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "every_s": self.every_s,
            "location": self.location,
        }
        if self.notify is not None:
            data["watchdog_stalled"] = self.notify.stalled
            data["stall_s"] = self.notify.stall_s
        return data

    def beat(self, listener, kind: str = "beat") -> dict:
        data = self.snapshot(listener, kind)
        listener.store.add_health(data, t_utc=self.clock())
        self.rows += 1
        self.last = self.monotonic()
        log.debug("heartbeat %s", data)
        return data

    def on_start(self, listener) -> None:
        self.started = self.monotonic()
        self.beat(listener, "start")

    def on_tick(self, listener, now_wall: float) -> None:
        if self.last is None or self.monotonic() - self.last >= self.every_s:
            self.beat(listener)

    def on_stop(self, listener) -> None:
        self.beat(listener, "stop")


# ---------------------------------------------------------------- SIGHUP reload
