"""The listening loop: source -> BlockStream -> model -> post-processing -> durable log, with hooks.

``Listener(model, source, store, post_settings, hooks=[...], clock=time.time).run(stop_event)``

Hooks (``runtime.listen.hooks.Hook`` subclasses) see every stage: start, audio, block, event, tick, stop.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from runtime.detect.events import Event, EventDetector, PostSettings
from runtime.features.pipeline import BlockStream
from runtime.listen.hooks import Hook
from runtime.store.schema import utc_iso

log = logging.getLogger(__name__)

CLIP_LEVEL = 0.999
SILENCE_LEVEL = 1e-6  # peak below this: digital silence (muted input, wrong device)
SILENCE_WARN_S = 60.0
WARN_EVERY_S = 3600.0  # clipping / silence warnings at most this often


@dataclass
class ListenStats:
    started: float = 0.0  # clock() at start
    chunks: int = 0
    samples: int = 0
    audio_s: float = 0.0  # seconds of audio processed
    blocks: int = 0
    events: int = 0
    events_by_label: dict = field(default_factory=dict)
    last_audio: float | None = None  # clock() when audio last arrived
    last_event_utc: str | None = None
    wall_s: float = 0.0  # monotonic seconds spent in run()
    hook_errors: int = 0
    model_swaps: int = 0
    clipped_samples: int = 0  # |x| >= CLIP_LEVEL
    silent_s: float = 0.0  # current run of digital silence, seconds

    def as_dict(self) -> dict:
        return asdict(self)


class Listener:
    def __init__(self, model, source, store, post_settings: PostSettings, hooks=(), clock: Callable[[], float] = time.time,
                 *, block_hop: int | None = None, clips=None, tick_s: float = 1.0, prune_every_s: float = 600.0,
                 monotonic: Callable[[], float] = time.monotonic):
        self.model = model
        self.source = source
        self.store = store
        self.block_hop = block_hop
        self.settings = post_settings.resolved(model.labels)
        self.hooks = list(hooks)
        for hook in self.hooks:
            if not isinstance(hook, Hook):
                raise TypeError(f"listen hooks subclass runtime.listen.hooks.Hook; {type(hook).__name__} does not")
        self.clock = clock
        self.monotonic = monotonic
        self.clips = clips
        self.tick_s = tick_s
        self.prune_every_s = prune_every_s
        self.stats = ListenStats()
        self.stopped_by_request = False
        self._swap_lock = threading.Lock()
        self._next_model = None
        self._failed_hooks: set = set()
        self._anchor = None  # (wall time, stream offset) of the last live chunk
        self._warned: dict = {}
        self._setup_model(model, offset_s=0.0)

    # ------------------------------------------------------------ model

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    def _params_for(self, model):
        return model.params if self.block_hop is None else model.params.with_block_hop(self.block_hop)

    def _setup_model(self, model, offset_s: float) -> None:
        self.model = model
        self.params = self._params_for(model)
        self.detector = EventDetector(model.labels, self.settings, self.params.block_hop_seconds)
        self._offset_base = offset_s  # stream offset where the current BlockStream starts
        self._stream = None

    def swap_model(self, model, settings: PostSettings | None = None) -> None:
        """Use ``model`` from the next chunk on (called from another thread or a signal handler), with its
        detection ``settings`` (None: keep the current ones)."""
        with self._swap_lock:
            self._next_model = (model, settings)

    def _apply_swap(self) -> None:
        with self._swap_lock:
            swap, self._next_model = self._next_model, None
        if swap is None:
            return
        model, settings = swap
        same_input = self._params_for(model) == self.params and model.labels == self.labels
        new_settings = (settings or self.settings).resolved(model.labels)
        if same_input and new_settings == self.settings:
            self.model = model  # blocks and events continue seamlessly
        elif same_input:  # same blocks, new thresholds: events so far end under the old settings
            self._close_events()
            self.model, self.settings = model, new_settings
            self.detector = EventDetector(model.labels, self.settings, self.params.block_hop_seconds)
            log.info("detection settings now %s", self.settings.to_dict())
        else:
            self._close_events()
            for block in self._stream.flush():
                self._on_block(block)
            self._close_events()
            self.settings = new_settings
            self._setup_model(model, offset_s=self.stats.audio_s)
            self._stream = BlockStream(self.params, self.source.sample_rate)
        self.store.model_sha = model.bundle.sha256
        self.stats.model_swaps += 1
        log.info("model swapped to %s (%s)", model.bundle.name, model.bundle.short_sha)

    # ------------------------------------------------------------ time

    def wall_of(self, offset_s: float) -> float:
        """Wall-clock time (Unix s) of a stream offset: live sources anchor to the last chunk's arrival."""
        if self._anchor is None:
            return self.stats.started + offset_s
        wall, off = self._anchor
        return wall - (off - offset_s)

    # ------------------------------------------------------------ hooks

    def _call(self, name: str, *args) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, name)(self, *args)
            except Exception:
                self.stats.hook_errors += 1
                key = (id(hook), name)
                if key not in self._failed_hooks:
                    self._failed_hooks.add(key)
                    log.exception("hook %s.%s failed (further failures are counted, not logged)",
                                  type(hook).__name__, name)

    # ------------------------------------------------------------ the loop

    def _on_block(self, block) -> None:
        scores = np.asarray(self.model.score_block(block.features), dtype=np.float32).reshape(-1)
        start_s = self._offset_base + block.start_s
        end_s = self._offset_base + block.end_s
        self.stats.blocks += 1
        self.store.add_window(self.wall_of(start_s), start_s, end_s, self.labels, scores)
        self._call("on_block", block, scores)
        for event in self.detector.push(start_s, end_s, scores):
            self._log_event(event)

    def _log_event(self, event: Event) -> None:
        row = {"label": event.label, "start_utc": utc_iso(self.wall_of(event.start_s)),
               "end_utc": utc_iso(self.wall_of(event.end_s)), "start_s": event.start_s, "end_s": event.end_s,
               "peak": event.peak, "mean": event.mean}
        self.stats.events += 1
        self.stats.events_by_label[event.label] = self.stats.events_by_label.get(event.label, 0) + 1
        self.stats.last_event_utc = row["start_utc"]
        self.store.add_event(row, on_written=self._event_written)

    def _event_written(self, row: dict) -> None:
        if self.clips is not None:
            self.clips.request(row)
        self._call("on_event", row)

    def _close_events(self) -> None:
        for event in self.detector.close():
            self._log_event(event)

    def run(self, stop_event: threading.Event | None = None) -> dict:
        """Listen until the source ends or ``stop_event`` is set; returns the run summary."""
        stop_event = stop_event or threading.Event()
        t0 = self.monotonic()
        self.stats.started = self.clock()
        self._anchor = None
        with self.source:
            self._stream = BlockStream(self.params, self.source.sample_rate)
            self.store.start_run({"model_name": self.model.bundle.name, "labels": self.labels,
                                  "block_hop": self.params.block_hop, "sample_rate": self.source.sample_rate})
            if self.clips is not None:
                self.clips.start(self.source.sample_rate, self.store)
            self._call("on_start")
            self.store.prune(every_s=0.0)
            if hasattr(self.source, "set_stop"):
                self.source.set_stop(stop_event)
            try:
                self._loop(stop_event)
            finally:  # also when the source fails for good: open events are closed and logged
                summary = self._finish(t0)
        return summary

    def _loop(self, stop_event: threading.Event) -> None:
        last_tick = self.monotonic()
        for chunk in self.source.blocks():
            if stop_event.is_set():
                self.stopped_by_request = True
                break
            if self._next_model is not None:
                self._apply_swap()
            if len(chunk):
                self._feed(chunk)
            now_m = self.monotonic()
            if now_m - last_tick >= self.tick_s:
                last_tick = now_m
                self._tick()
            if stop_event.is_set():
                self.stopped_by_request = True
                break

    def _finish(self, t0: float) -> dict:
        for block in self._stream.flush():
            self._on_block(block)
        self._close_events()
        if self.clips is not None:
            self.clips.finish()
        self.stats.wall_s = self.monotonic() - t0
        self._call("on_stop")
        summary = self.summary()
        self.store.end_run({k: summary[k] for k in ("audio_s", "blocks", "events", "stopped")})
        return self.summary()  # again: rows the end of the run could not write are counted now

    def _feed(self, chunk: np.ndarray) -> None:
        if self.source.sample_rate != self._stream.in_rate:  # a reconnected device came back at another rate
            for block in self._stream.flush():
                self._on_block(block)
            self._offset_base += self._stream.seconds_in
            self._stream = BlockStream(self.params, self.source.sample_rate)
        now = self.clock()
        self.stats.chunks += 1
        self.stats.samples += len(chunk)
        self.stats.last_audio = now
        self._check_level(chunk, now)
        if self.clips is not None:
            self.clips.push(chunk)
        if self.source.live:  # the chunk's last sample arrived about now
            self._anchor = (now, self._offset_base + self._stream.seconds_in + len(chunk) / self.source.sample_rate)
        for block in self._stream.push(chunk):
            self._on_block(block)
        self.stats.audio_s = self._offset_base + self._stream.seconds_in
        self._call("on_audio", len(chunk))
        if self.clips is not None:
            self.clips.poll(self.stats.audio_s)

    def _check_level(self, chunk: np.ndarray, now: float) -> None:
        """Warn (at most hourly) about clipping and long digital silence; classification goes on."""
        peak = float(np.max(np.abs(chunk)))
        rate = self.source.sample_rate
        if peak >= CLIP_LEVEL:
            n = int(np.count_nonzero(np.abs(chunk) >= CLIP_LEVEL))
            self.stats.clipped_samples += n
            if n > 0.001 * len(chunk) and now - self._warned.get("clip", -1e18) >= WARN_EVERY_S:
                self._warned["clip"] = now
                log.warning("input is clipping (%d samples at full scale in %.1f s): lower the input gain",
                            n, len(chunk) / rate)
        if peak < SILENCE_LEVEL:
            self.stats.silent_s += len(chunk) / rate
            if self.stats.silent_s >= SILENCE_WARN_S and now - self._warned.get("silence", -1e18) >= WARN_EVERY_S:
                self._warned["silence"] = now
                log.warning("input has been digitally silent for %.0f s: muted, or the wrong input device?",
                            self.stats.silent_s)
        else:
            self.stats.silent_s = 0.0

    def _tick(self) -> None:
        now = self.clock()
        self.store.flush()
        self.store.prune(every_s=self.prune_every_s)
        self._call("on_tick", now)

    def summary(self) -> dict:
        s = self.stats
        src = self.source.stats
        return {
            "source": self.source.name, "audio_s": round(s.audio_s, 3), "wall_s": round(s.wall_s, 3),
            "x_realtime": round(s.audio_s / s.wall_s, 1) if s.wall_s > 0 else None,
            "blocks": s.blocks, "events": s.events, "events_by_label": dict(sorted(s.events_by_label.items())),
            "overruns": src.overruns, "dropped_blocks": src.dropped_blocks, "reconnects": src.reconnects,
            "dropped_rows": self.store.dropped_rows, "write_errors": self.store.write_errors,
            "hook_errors": s.hook_errors,
            "clips_skipped_low_space": self.clips.skipped_low_space if self.clips is not None else 0, "clipped_samples": s.clipped_samples, "stopped": self.stopped_by_request, "run": self.store.run_key,
            "db": str(self.store.path), "model_sha": self.store.model_sha,
        }
