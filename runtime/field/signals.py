"""Process signals of a long-running command (`listen`, `collect`): SIGINT/SIGTERM ask it to stop, SIGHUP to reload."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


class Signals:
    """SIGINT/SIGTERM set ``stop``; SIGHUP sets ``reload``. Installed before anything slow happens, so a
    signal during start-up is never lost (SIGHUP's default action would kill the process; an early SIGTERM
    still ends the run cleanly, with its end record)."""

    STOP = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()
        self._previous: dict = {}

    def _on_stop(self, signum, frame) -> None:
        log.info("signal %d: stopping", signum)
        self.stop.set()

    def _on_hup(self, signum, frame) -> None:
        self.reload.set()

    def install(self) -> "Signals":
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: signals are not handled (no SIGHUP reload)")
            return self
        for s in self.STOP:
            self._previous[s] = signal.signal(s, self._on_stop)
        self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
