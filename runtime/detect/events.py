"""Block scores -> events: per-label thresholds, moving-average smoothing, hysteresis, minimum
duration and merge gap. Pure: no clock, no I/O; times are stream offsets in seconds.

Each block stands for the central ``hop`` seconds of the audio it covers (``segment_of``), so that
consecutive blocks tile the stream without overlap and an event's start/end land within about half a
hop of the sound's. Smoothing is a moving average over ``smoothing`` blocks, attributed to the middle
block of the window (so it delays output by ``(smoothing - 1) // 2`` blocks but does not shift times).

A label turns *on* when its smoothed score reaches its threshold and *off* when it drops below
``threshold - hysteresis``. An event that ended is held for ``merge_gap_s``: if the label turns on
again within that gap, the two are merged. Events shorter than ``min_event_s`` are discarded.
``peak``/``mean`` are over the smoothed scores of the event's blocks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from runtime.detect.thresholds import check_known, stream_thresholds
from runtime.errors import ConfigError


@dataclass(frozen=True)
class PostSettings:
    thresholds: dict = field(default_factory=dict)  # label -> on threshold (bundle defaults, overridable)
    default_threshold: float = 0.5  # for labels without one
    smoothing: int = 1  # moving average over N blocks (1 = none)
    hysteresis: float = 0.1  # off threshold = on threshold - hysteresis (clipped at 0)
    min_event_s: float = 0.0
    merge_gap_s: float = 0.0
    ignore: tuple = ()  # labels never turned into events (e.g. "background")

    def __post_init__(self) -> None:
        problems = []
        for k, v in {**self.thresholds, "default": self.default_threshold}.items():
            if not 0.0 <= float(v) <= 1.0:
                problems.append(f"threshold {k}={v} not in [0, 1]")
        if int(self.smoothing) < 1:
            problems.append(f"smoothing must be >= 1 block, got {self.smoothing}")
        if not 0.0 <= self.hysteresis < 1.0:
            problems.append(f"hysteresis must be in [0, 1), got {self.hysteresis}")
        if self.min_event_s < 0 or self.merge_gap_s < 0:
            problems.append("min_event_s and merge_gap_s must be >= 0")
        if problems:
            raise ConfigError("invalid detection settings: " + "; ".join(problems))

    def on_threshold(self, label: str) -> float:
        return float(self.thresholds.get(label, self.default_threshold))

    def off_threshold(self, label: str) -> float:
        return max(0.0, self.on_threshold(label) - self.hysteresis)

    def resolved(self, labels) -> "PostSettings":
        """The same settings with every label's threshold spelled out (what gets logged)."""
        return PostSettings(**{**asdict(self), "thresholds": {l: self.on_threshold(l) for l in labels},
                               "ignore": tuple(self.ignore)})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ignore"] = list(self.ignore)
        return d

    @classmethod
    def for_bundle(cls, bundle, overrides: dict | None = None, **kwargs) -> "PostSettings":
        """The bundle's stream thresholds and detection settings, then per-label ``overrides`` and the settings
        given in ``kwargs`` (a None value: keep the bundle's, else the built-in default)."""
        check_known(overrides or {}, bundle.labels)
        chosen = {k: v for k, v in bundle.stream.items() if k != "thresholds"}
        chosen.update({k: v for k, v in kwargs.items() if v is not None})
        return cls(thresholds=stream_thresholds(bundle, overrides), **chosen)


@dataclass
class Event:
    label: str
    start_s: float
    end_s: float
    peak: float
    mean: float
    n_blocks: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def segment_of(start_s: float, end_s: float, hop_s: float) -> tuple[float, float]:
    """The central ``hop_s`` seconds of a block [start_s, end_s] (the whole block if hop >= its length)."""
    length = end_s - start_s
    if hop_s >= length:
        return start_s, end_s
    a = start_s + (length - hop_s) / 2.0
    return a, a + hop_s


class MovingAverage:
    """Mean of the last ``n`` score vectors, attributed to the middle one."""

    def __init__(self, n: int):
        self.n = int(n)
        self._items: deque = deque()  # (payload, scores)
        self._emitted = 0
        self._pushed = 0

    def push(self, payload, scores: np.ndarray) -> list[tuple[object, np.ndarray]]:
        self._items.append((payload, np.asarray(scores, dtype=np.float64)))
        self._pushed += 1
        if len(self._items) > self.n:
            self._items.popleft()
        out = []
        centre = (self.n - 1) // 2
        # item k is ready once the (n - 1 - centre) items after it have arrived
        while self._emitted < self._pushed and self._emitted + (self.n - 1 - centre) < self._pushed:
            out.append(self._window_for(self._emitted))
            self._emitted += 1
        return out

    def _window_for(self, k: int) -> tuple[object, np.ndarray]:
        first = self._pushed - len(self._items)  # absolute index of _items[0]
        centre = (self.n - 1) // 2
        lo = max(k - centre, first)
        hi = min(k + (self.n - 1 - centre), self._pushed - 1)
        window = [self._items[i - first][1] for i in range(lo, hi + 1)]
        return self._items[k - first][0], np.mean(window, axis=0)

    def flush(self) -> list[tuple[object, np.ndarray]]:
        out = []
        while self._emitted < self._pushed:
            out.append(self._window_for(self._emitted))
            self._emitted += 1
        return out


class _Track:
    """One label's state: on/off, the event being built, and an ended event held for merging."""

    def __init__(self):
        self.open: Event | None = None
        self.held: Event | None = None


class EventDetector:
    """Feed block scores in stream order; get finished events back."""

    def __init__(self, labels: list[str], settings: PostSettings, hop_s: float):
        self.labels = list(labels)
        self.settings = settings
        self.hop_s = float(hop_s)
        self.on = np.array([settings.on_threshold(l) for l in self.labels])
        self.off = np.array([settings.off_threshold(l) for l in self.labels])
        self.active = np.array([l not in settings.ignore for l in self.labels])
        self.smoother = MovingAverage(settings.smoothing)
        self.tracks = [_Track() for _ in self.labels]
        self.discarded_short = 0
        self.last_time = 0.0

    def push(self, start_s: float, end_s: float, scores) -> list[Event]:
        """One block's raw scores; returns the events that finished."""
        seg = segment_of(start_s, end_s, self.hop_s)
        out = []
        for (a, b), smoothed in self.smoother.push(seg, scores):
            out.extend(self._step(a, b, smoothed))
        return out

    def _step(self, a: float, b: float, s: np.ndarray) -> list[Event]:
        out = []
        self.last_time = b
        for i, label in enumerate(self.labels):
            if not self.active[i]:
                continue
            t = self.tracks[i]
            v = float(s[i])
            if t.open is None:
                if v >= self.on[i]:
                    if t.held is not None and a - t.held.end_s <= self.settings.merge_gap_s + 1e-9:
                        t.open, t.held = t.held, None  # merge: continue the held event
                        t.open.end_s = b
                        self._add(t.open, v)
                    else:
                        if t.held is not None:
                            out.extend(self._emit(t.held))
                            t.held = None
                        t.open = Event(label, a, b, v, v, 1)
            elif v >= self.off[i]:
                t.open.end_s = b
                self._add(t.open, v)
            else:
                ended, t.open = t.open, None
                if t.held is not None:
                    out.extend(self._emit(t.held))
                t.held = ended
            if t.held is not None and t.open is None and a - t.held.end_s > self.settings.merge_gap_s + 1e-9:
                out.extend(self._emit(t.held))
                t.held = None
        return out

    @staticmethod
    def _add(e: Event, v: float) -> None:
        e.mean = (e.mean * e.n_blocks + v) / (e.n_blocks + 1)
        e.n_blocks += 1
        e.peak = max(e.peak, v)

    def _emit(self, e: Event) -> list[Event]:
        if e.duration_s + 1e-9 < self.settings.min_event_s:
            self.discarded_short += 1
            return []
        return [e]

    def close(self) -> list[Event]:
        """End of stream (or stop): smooth out the tail, close open events, emit held ones."""
        out = []
        for (a, b), smoothed in self.smoother.flush():
            out.extend(self._step(a, b, smoothed))
        for t in self.tracks:
            for e in (t.held, t.open):
                if e is not None:
                    out.extend(self._emit(e))
            t.held = t.open = None
        out.sort(key=lambda e: (e.start_s, e.label))
        return out


def detect(labels, settings: PostSettings, hop_s: float, blocks) -> list[Event]:
    """All events of a finished stream: ``blocks`` is an iterable of (start_s, end_s, scores)."""
    det = EventDetector(labels, settings, hop_s)
    events = []
    for start_s, end_s, scores in blocks:
        events.extend(det.push(start_s, end_s, scores))
    events.extend(det.close())
    events.sort(key=lambda e: (e.start_s, e.label))
    return events
