"""SIGHUP reload as a listen hook: re-read the config in the background and swap a changed model bundle between two chunks."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from runtime.errors import FieldearError
from runtime.field.sdnotify import Notifier
from runtime.listen.hooks import Hook

log = logging.getLogger(__name__)


def _default_model_loader(path, threads):
    from runtime.model.model import Model

    return Model.load(path, threads=threads)


class Reloader(Hook):
    """SIGHUP -> re-read the config; swap in the model bundle if it changed. The loop never waits for it.

    ``reload_config()`` returns the new (validated, overrides applied) Config. Changes other than the model
    and ``[health]`` are logged as needing a restart.
    """

    RESTART_SECTIONS = ("device", "audio", "detect", "store", "clips", "mqtt", "metrics")

    def __init__(self, config, reload_config: Callable[[], object], notifier: Notifier | None = None,
                 load_model: Callable = _default_model_loader, requested: threading.Event | None = None,
                 on_config: list[Callable] | None = None, monotonic: Callable[[], float] = time.monotonic):
        self.config = config
        self.reload_config = reload_config
        self.notifier = notifier or Notifier({})
        self.load_model = load_model
        self.on_config = list(on_config or [])
        self.monotonic = monotonic
        self.requested = requested if requested is not None else threading.Event()  # set by SIGHUP
        self.thread: threading.Thread | None = None
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None
        self._model_sha: str | None = None  # the bundle the listener runs or is about to run

    def request(self) -> None:
        """Ask for a reload (what SIGHUP does, through ``runtime.listen.program.Signals``)."""
        self.requested.set()

    def on_start(self, listener) -> None:
        self._model_sha = listener.model.bundle.sha256

    def on_tick(self, listener, now_wall: float) -> None:
        if not self.requested.is_set() or (self.thread is not None and self.thread.is_alive()):
            return
        self.requested.clear()
        self.thread = threading.Thread(target=self.reload, args=(listener,), name="fieldear-reload", daemon=True)
        self.thread.start()

    def on_stop(self, listener) -> None:
        if self.thread is not None:
            self.thread.join(timeout=30)

    def reload(self, listener) -> bool:
        """Re-read the config and swap the model if its bundle changed. Returns True on success."""
        from runtime.config import check_labels
        from runtime.model.bundle import load_bundle

        t0 = self.monotonic()
        self.notifier.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
                             STATUS="reloading configuration")
        log.info("reload requested: re-reading %s", self.config.source or "the configuration")
        try:
            new = self.reload_config()
            bundle = load_bundle(new.model.path)
            if bundle.sha256 != self._model_sha:
                from runtime.detect.events import PostSettings

                model = self.load_model(new.model.path, new.model.threads)
                check_labels(new, model.labels)
                # the new bundle's stream defaults, under the (re-read) config's own settings
                settings = PostSettings.for_bundle(model.bundle, dict(new.detect.thresholds), **new.detect.post_kwargs())
                listener.swap_model(model, settings)
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
