"""Running unattended: systemd notify + watchdog, heartbeat rows, SIGHUP reload. All are listen hooks.

- ``NotifyHook``: ``READY=1`` once the model is loaded *and* audio flows; ``WATCHDOG=1`` (every half
  ``WatchdogSec``) only while audio keeps arriving: after ``[health] watchdog_stall_s`` without audio it stops
  feeding, so systemd kills and restarts the service; ``STATUS=`` with counts; ``STOPPING=1`` on stop.
- ``HeartbeatHook``: a ``health`` row every ``[health] every_s`` (and at start and stop): uptime, blocks,
  overruns, drops, events, disk free, CPU temperature (``/sys/class/thermal`` when present), RSS.
- ``Reloader``: SIGHUP (``systemctl reload fieldear``) sets a flag; the next tick re-reads the config in a
  background thread and, if the model bundle changed (e.g. deploy switched ``models/current``), loads it and
  hands it to ``listener.swap_model`` (which switches between two chunks: no audio is lost).

``build_field_hooks(config, ...)`` makes all three; ``listen_hooks(config, args)`` is what ``fieldear listen``
calls (``runtime.cli_listen.HOOK_MODULES``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

from runtime.errors import FieldearError
from runtime.sdnotify import Notifier

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


class NotifyHook:
    """sd_notify for ``Type=notify`` + ``WatchdogSec=``; a no-op outside systemd."""

    def __init__(self, notifier: Notifier, stall_s: float, monotonic: Callable[[], float] = time.monotonic,
                 status_every_s: float = 10.0):
        self.notifier = notifier
        self.stall_s = float(stall_s)
        self.monotonic = monotonic
        self.status_every_s = status_every_s
        self.ready = False
        self.stalled = False
        self.last_audio: float | None = None
        self.last_feed: float | None = None
        self.last_status: float | None = None
        self.watchdog_sent = 0

    @property
    def feed_every_s(self) -> float | None:
        """Half the watchdog interval (systemd's advice); None when no watchdog is enabled."""
        w = self.notifier.watchdog_s
        return None if w is None else w / 2.0

    def on_start(self, listener) -> None:
        now = self.monotonic()
        self.last_audio = now  # the stall clock starts now: no audio within stall_s -> no feeding
        self._feed(now)
        self.notifier.status(f"model {listener.model.bundle.name} loaded; waiting for audio from {listener.source.name}")

    def on_audio(self, listener, n_samples: int) -> None:
        if n_samples <= 0:
            return
        now = self.monotonic()
        self.last_audio = now
        if self.stalled:
            log.warning("audio is arriving again; feeding the watchdog again")
            self.stalled = False
        if not self.ready:
            self.ready = True
            self.notifier.ready(status=self._status_text(listener))
            self.last_status = now
            log.info("ready: audio is flowing from %s", listener.source.name)
        self._feed(now)

    def on_tick(self, listener, now_wall: float) -> None:
        now = self.monotonic()
        if self.last_audio is not None and now - self.last_audio >= self.stall_s:
            if not self.stalled:
                self.stalled = True
                log.error("no audio for %.0f s: no longer feeding the systemd watchdog (the service will be "
                          "restarted)", now - self.last_audio)
                self.notifier.status(f"STALLED: no audio for {now - self.last_audio:.0f} s")
            return
        self._feed(now)
        if self.ready and (self.last_status is None or now - self.last_status >= self.status_every_s):
            self.last_status = now
            self.notifier.status(self._status_text(listener))

    def on_stop(self, listener) -> None:
        self.notifier.stopping(status=f"stopping: {self._status_text(listener)}")

    def _feed(self, now: float) -> None:
        every = self.feed_every_s
        if every is None or (self.last_feed is not None and now - self.last_feed < every):
            return
        if self.notifier.watchdog():
            self.watchdog_sent += 1
        self.last_feed = now

    @staticmethod
    def _status_text(listener) -> str:
        s, src = listener.stats, listener.source.stats
        return (f"listening to {listener.source.name}: {s.blocks} blocks, {s.events} events, "
                f"{src.overruns} overruns, {src.dropped_blocks} dropped")


# ---------------------------------------------------------------- heartbeat rows


class HeartbeatHook:
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


def _default_model_loader(path, threads):
    from runtime.model import Model

    return Model.load(path, threads=threads)


class Reloader:
    """SIGHUP -> re-read the config; swap in the model bundle if it changed. The loop never waits for it.

    ``reload_config()`` returns the new (validated, overrides applied) Config. Changes other than the model
    and ``[health]`` are logged as needing a restart.
    """

    RESTART_SECTIONS = ("device", "audio", "detect", "store", "clips", "mqtt")

    def __init__(self, config, reload_config: Callable[[], object], notifier: Notifier | None = None,
                 load_model: Callable = _default_model_loader, install_signal: bool = True,
                 on_config: list[Callable] | None = None, monotonic: Callable[[], float] = time.monotonic):
        self.config = config
        self.reload_config = reload_config
        self.notifier = notifier or Notifier({})
        self.load_model = load_model
        self.install_signal = install_signal
        self.on_config = list(on_config or [])
        self.monotonic = monotonic
        self.requested = threading.Event()
        self.thread: threading.Thread | None = None
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None
        self._previous_handler = None
        self._model_sha: str | None = None  # the bundle the listener runs or is about to run

    def request(self) -> None:
        """Ask for a reload (the SIGHUP handler does only this)."""
        self.requested.set()

    def _on_signal(self, signum, frame) -> None:
        self.requested.set()

    def on_start(self, listener) -> None:
        self._model_sha = listener.model.bundle.sha256
        if self.install_signal:
            if threading.current_thread() is threading.main_thread():
                self._previous_handler = signal.signal(signal.SIGHUP, self._on_signal)
            else:
                log.warning("not in the main thread: SIGHUP reload is not available")

    def on_tick(self, listener, now_wall: float) -> None:
        if not self.requested.is_set() or (self.thread is not None and self.thread.is_alive()):
            return
        self.requested.clear()
        self.thread = threading.Thread(target=self.reload, args=(listener,), name="fieldear-reload", daemon=True)
        self.thread.start()

    def on_stop(self, listener) -> None:
        if self.thread is not None:
            self.thread.join(timeout=30)
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None

    def reload(self, listener) -> bool:
        """Re-read the config and swap the model if its bundle changed. Returns True on success."""
        from runtime.bundle import load_bundle
        from runtime.config import check_labels

        t0 = self.monotonic()
        self.notifier.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
                             STATUS="reloading configuration")
        log.info("reload requested: re-reading %s", self.config.source or "the configuration")
        try:
            new = self.reload_config()
            bundle = load_bundle(new.model.path)
            if bundle.sha256 != self._model_sha:
                model = self.load_model(new.model.path, new.model.threads)
                check_labels(new, model.labels)
                listener.swap_model(model)
                self._model_sha = model.bundle.sha256
                log.info("reload: new model %s (%s) loaded in %.1f s; it takes over at the next chunk",
                         model.bundle.name, model.bundle.short_sha, self.monotonic() - t0)
            else:
                log.info("reload: model bundle unchanged (%s)", bundle.short_sha)
            changed = [s for s in self.RESTART_SECTIONS if getattr(new, s) != getattr(self.config, s)]
            if changed:
                log.warning("reload: changes in [%s] take effect after a restart (systemctl restart fieldear)",
                            "], [".join(changed))
            for callback in self.on_config:
                callback(new)
            self.config = new
            self.reloads += 1
            self.last_error = None
            self.notifier.ready(status=f"reloaded; model {self._model_sha[:12]}")
            return True
        except FieldearError as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.error("reload failed, still running the previous model and config: %s", exc)
            self.notifier.ready(status=f"reload failed: {exc}")
            return False
        except Exception as exc:  # a broken bundle can fail deep in the interpreter; never kill the listener
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("reload failed, still running the previous model and config")
            self.notifier.ready(status=f"reload failed: {self.last_error}")
            return False


# ---------------------------------------------------------------- wiring


def build_field_hooks(config, clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                      environ: Mapping[str, str] | None = None, reload_config: Callable[[], object] | None = None,
                      install_signal: bool = True) -> list:
    """The field hooks for a listen run: notify/watchdog, heartbeat and (given ``reload_config``) SIGHUP reload."""
    notifier = Notifier(environ)
    notify = NotifyHook(notifier, stall_s=config.health.watchdog_stall_s, monotonic=monotonic)
    heartbeat = HeartbeatHook(config.health.every_s, location=config.device.location, clock=clock,
                              monotonic=monotonic, notify=notify)
    hooks: list = [notify, heartbeat]
    if reload_config is not None:

        def apply_health(new) -> None:
            notify.stall_s = new.health.watchdog_stall_s
            heartbeat.every_s = new.health.every_s
            heartbeat.location = new.device.location

        hooks.append(Reloader(config, reload_config, notifier=notifier, install_signal=install_signal,
                              on_config=[apply_health], monotonic=monotonic))
    if notifier.enabled:
        log.info("systemd notify socket found; watchdog %s", f"{notifier.watchdog_s:g} s" if notifier.watchdog_s
                 else "off")
    return hooks


def listen_hooks(config, args) -> list:
    """Called by ``fieldear listen`` (runtime.cli_listen.HOOK_MODULES): the field hooks, reload re-reading the
    same config file with the same command-line options."""
    from runtime.cli_listen import build_config

    return build_field_hooks(config, reload_config=lambda: build_config(args))


# ---------------------------------------------------------------- status (fieldear status)


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


def collect_status(db: Path, now: float, service: str = "fieldear", every_s: float | None = None,
                   state: str | None | object = ..., thermal_root: Path = THERMAL_ROOT) -> dict:
    """What `fieldear status` shows: running?, last heartbeat and event, overruns, disk, CPU temperature.

    Running is decided by systemd when it manages the machine (``state``: injected for tests), else by the
    log: the latest run has not ended and its last heartbeat is recent (2 intervals + 30 s).
    """
    import json
    import sqlite3

    from runtime.store import parse_utc, runs

    if state is ...:
        state = service_state(service)
    out: dict = {"db": str(db), "service": service, "systemd_state": state, "running": False, "ok": False,
                 "how": "systemd" if state is not None else "heartbeat", "problems": [],
                 "disk_free_mb": disk_free_mb(Path(db).parent), "cpu_temp_c": cpu_temperature(thermal_root),
                 "heartbeat": None, "heartbeat_age_s": None, "last_event": None, "run": None}
    if Path(db).is_file():
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            conn.row_factory = sqlite3.Row
            try:
                row = conn.execute("SELECT t_utc, json FROM health ORDER BY id DESC LIMIT 1").fetchone()
                if row is not None:
                    beat = json.loads(row["json"])
                    beat["t_utc"] = row["t_utc"]
                    out["heartbeat"] = beat
                    out["heartbeat_age_s"] = round(now - parse_utc(row["t_utc"]), 1)
                ev = conn.execute("SELECT id, label, start_utc, end_utc, peak, source FROM events "
                                  "ORDER BY id DESC LIMIT 1").fetchone()
                out["last_event"] = dict(ev) if ev is not None else None
                all_runs = runs(conn)
                out["run"] = all_runs[-1] if all_runs else None
                out["events_total"] = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            finally:
                conn.close()
        except (sqlite3.Error, ValueError) as exc:
            out["problems"].append(f"cannot read the log database: {exc}")
    else:
        out["problems"].append(f"no log database at {db}")
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
        out["problems"].append(f"last heartbeat {out['heartbeat_age_s']:.0f} s ago (expected every {interval:.0f} s)")
    if beat.get("watchdog_stalled"):
        out["problems"].append("audio stalled at the last heartbeat")
    for key in ("overruns", "dropped_blocks", "dropped_rows", "write_errors"):
        if beat.get(key):
            out["problems"].append(f"{key}: {beat[key]}")
    out["ok"] = bool(out["running"] and not beat.get("watchdog_stalled"))
    return out


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
    disk = f"{s['disk_free_mb'] / 1000:.1f} GB" if s["disk_free_mb"] is not None else "?"
    temp = f"{s['cpu_temp_c']:.1f} C" if s["cpu_temp_c"] is not None else "n/a"
    lines.append(f"disk free:  {disk}   CPU temperature: {temp}")
    for problem in s["problems"]:
        lines.append(f"problem:    {problem}")
    return "\n".join(lines)
