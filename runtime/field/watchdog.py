"""systemd notify + watchdog as a listen hook: READY=1 once audio flows, WATCHDOG=1 only while it keeps flowing."""

from __future__ import annotations

import logging
import time
from typing import Callable

from runtime.field.sdnotify import Notifier
from runtime.listen.hooks import Hook

log = logging.getLogger(__name__)


class NotifyHook(Hook):
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
                f"{src.overruns} overruns, {src.dropped_blocks} dropped" + _log_problem(listener.store))


def _log_problem(store) -> str:
    """The status line's warning while the log database cannot be written (a full card: listening goes on)."""
    if store is None or not store.failing:
        return ""
    return f"; NOT LOGGING: log database unwritable, {store.dropped_rows} rows dropped"
