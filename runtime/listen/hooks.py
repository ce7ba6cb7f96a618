"""What the listener tells the rest of the device: the hook interface.

A hook subclasses ``Hook`` and overrides the methods it needs (the others do nothing). The listener calls
every method of every hook in order; an exception in a hook is logged once and counted, never propagated
(the audio loop must not stop because a report could not be sent).

- ``on_start(listener)``: model loaded, source open, store ready (sd_notify READY=1 goes here)
- ``on_audio(listener, n_samples)``: audio arrived (feed the watchdog here: it is *not* called while the
  source delivers nothing)
- ``on_block(listener, block, scores)``: every block scored (``block`` is a ``runtime.features.pipeline.Block``
  whose times are offsets in this run's stream; ``scores`` a float array in ``listener.labels`` order)
- ``on_event(listener, row)``: an event row once it is committed to the log (dict with the ``events``
  columns, ``id`` included)
- ``on_tick(listener, now)``: about once a second (``now`` from the injected clock), also when no audio comes
- ``on_stop(listener)``: after the last event was logged, before the store is closed

What a hook may read: ``listener.stats`` (``ListenStats``), ``listener.source.stats`` (overruns,
dropped_blocks, reconnects), ``listener.store`` (``add_health(dict)``, ``dropped_rows``, ``path``),
``listener.model``, ``listener.labels``, ``listener.settings``. ``listener.swap_model(model)`` (thread-safe)
replaces the model between two chunks without losing audio (SIGHUP reload).
"""

from __future__ import annotations


class Hook:
    """Base class of listen hooks: every method is a no-op until a subclass overrides it."""

    def on_start(self, listener) -> None:
        pass

    def on_audio(self, listener, n_samples: int) -> None:
        pass

    def on_block(self, listener, block, scores) -> None:
        pass

    def on_event(self, listener, row: dict) -> None:
        pass

    def on_tick(self, listener, now: float) -> None:
        pass

    def on_stop(self, listener) -> None:
        pass
