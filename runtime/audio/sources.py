"""Audio sources behind one interface: a microphone (sounddevice) or a recording replayed.

A ``Source`` has ``.sample_rate``, ``.name`` (``file:x.wav``, ``mic:hw:1``), ``.live`` (audio arrives in
wall-clock time), ``.stats`` (``overruns``, ``dropped_blocks``, ``reconnects``, ``chunks``, ``samples``) and is a
context manager; ``.blocks()`` yields float32 mono numpy chunks at ``.sample_rate``. ``.set_stop(event)`` hands
it the consumer's stop event: once set, waits such as a reconnect backoff end at once. A live source may yield
an *empty* chunk when no audio arrived for a short while, so the caller can tick (health, stop checks)
without feeding its watchdog.

The microphone callback only copies into a bounded ``ChunkQueue``: when the consumer falls behind, the newest
chunk is dropped and counted, memory stays bounded. ``FileSource(..., device_queue=N)`` replays a file
through the same kind of queue from a producer thread (a stand-in for a microphone in tests and benchmarks).
sounddevice is imported only when a microphone is opened.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from runtime.errors import AudioError

log = logging.getLogger(__name__)

FALLBACK_RATES = (48000, 44100)
COMMON_RATES = (8000, 16000, 22050, 32000, 44100, 48000, 96000)


@dataclass
class SourceStats:
    overruns: int = 0  # the device reported input overflow (audio lost before it reached us)
    dropped_blocks: int = 0  # chunks dropped because the consumer fell behind (queue full)
    reconnects: int = 0  # successful re-opens after the device failed
    chunks: int = 0  # chunks handed to the consumer
    samples: int = 0  # samples handed to the consumer

    def as_dict(self) -> dict:
        return asdict(self)


class ChunkQueue:
    """A bounded queue of audio chunks; ``offer`` never blocks and counts what it had to drop."""

    def __init__(self, max_chunks: int, stats: SourceStats):
        if max_chunks <= 0:
            raise ValueError("max_chunks must be > 0")
        self._q: queue.Queue = queue.Queue(maxsize=max_chunks)
        self.stats = stats

    def offer(self, chunk: np.ndarray) -> bool:
        try:
            self._q.put_nowait(chunk)
            return True
        except queue.Full:
            self.stats.dropped_blocks += 1
            return False

    def get(self, timeout: float):
        """The next chunk, or None after ``timeout`` seconds without one."""
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def put_control(self, item, stop: threading.Event) -> None:
        """End marker or error for the consumer: waits for room (never dropped) unless ``stop`` is set."""
        while not stop.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def qsize(self) -> int:
        return self._q.qsize()


class Source:
    name = "source"
    sample_rate = 0
    live = False

    def __init__(self) -> None:
        self.stats = SourceStats()
        self.stop_event: threading.Event | None = None

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def set_stop(self, event: threading.Event) -> None:
        self.stop_event = event

    def blocks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- file replay


_END = object()


class FileSource(Source):
    """Replay a recording: as fast as the consumer takes it, or paced (``realtime``, at ``speed`` x real time).

    ``device_queue`` > 0 makes it behave like a microphone: a producer thread reads (paced when realtime)
    into a bounded queue of that many chunks and drops what the consumer cannot take, counting it.
    """

    def __init__(self, path, realtime: bool = False, speed: float = 1.0, chunk_seconds: float = 0.5,
                 device_queue: int = 0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        super().__init__()
        self.path = Path(path)
        self.realtime = bool(realtime)
        self.speed = float(speed)
        if self.speed <= 0:
            raise AudioError(f"replay speed must be > 0, got {speed}")
        self.chunk_seconds = float(chunk_seconds)
        self.device_queue = int(device_queue)
        self.clock = clock
        self.sleep = sleep
        self.name = f"file:{self.path.name}"
        self.live = self.realtime
        self.info = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        from runtime.audio.files import probe

        if not self.path.is_file():
            raise AudioError(f"recording not found: {self.path}", "check the path passed to --file")
        self.info = probe(self.path)
        self.sample_rate = int(self.info.sample_rate)

    @property
    def duration_s(self) -> float:
        return float(self.info.duration_s) if self.info else 0.0

    def _paced(self) -> Iterator[np.ndarray]:
        from runtime.audio.files import iter_chunks

        t0 = self.clock()
        emitted = 0
        for chunk in iter_chunks(self.path, None, self.chunk_seconds):
            if self._stop.is_set():
                return
            if self.realtime:
                due = t0 + emitted / self.sample_rate / self.speed
                wait = due - self.clock()
                if wait > 0:
                    self.sleep(wait)
            emitted += len(chunk)
            yield np.asarray(chunk, dtype=np.float32)

    def _produce(self, q: ChunkQueue) -> None:
        try:
            for chunk in self._paced():
                q.offer(chunk)
        except Exception as exc:  # handed to the consumer, raised there
            q.put_control(exc, self._stop)
            return
        q.put_control(_END, self._stop)

    def blocks(self) -> Iterator[np.ndarray]:
        if self.info is None:
            self.open()
        if self.device_queue <= 0:
            for chunk in self._paced():
                self.stats.chunks += 1
                self.stats.samples += len(chunk)
                yield chunk
            return
        q = ChunkQueue(self.device_queue, self.stats)
        self._thread = threading.Thread(target=self._produce, args=(q,), name="fieldear-replay", daemon=True)
        self._thread.start()
        while True:
            item = q.get(timeout=0.5)
            if item is None:
                yield np.zeros(0, dtype=np.float32)
                continue
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            self.stats.chunks += 1
            self.stats.samples += len(item)
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


# ---------------------------------------------------------------- microphone


def import_sounddevice():
    """sounddevice, imported on first use; a clear error when it or PortAudio is missing."""
    try:
        import sounddevice
    except ImportError:
        raise AudioError("the microphone needs the sounddevice package", "pip install sounddevice") from None
    except OSError as exc:  # PortAudio library not found
        raise AudioError(f"PortAudio is not available ({exc})",
                         "install it: sudo apt install libportaudio2") from None
    return sounddevice


def _portaudio_errors(sd) -> tuple:
    err = getattr(sd, "PortAudioError", None)
    return (err, ValueError) if isinstance(err, type) else (ValueError,)


def input_devices(sd=None) -> list[dict]:
    """Input devices: index, name, hostapi, channels, default rate, default flag, supported common rates."""
    sd = sd or import_sounddevice()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0] if isinstance(sd.default.device, (list, tuple)) else sd.default.device
    except _portaudio_errors(sd) as exc:
        raise AudioError(f"cannot list audio devices: {exc}") from None
    out = []
    for index, dev in enumerate(devices):
        if int(dev.get("max_input_channels", 0)) < 1:
            continue
        rates = []
        for rate in COMMON_RATES:
            try:
                sd.check_input_settings(device=index, channels=1, dtype="float32", samplerate=rate)
                rates.append(rate)
            except _portaudio_errors(sd):
                pass
        out.append({"index": index, "name": dev.get("name", "?"), "hostapi": dev.get("hostapi"),
                    "channels": int(dev.get("max_input_channels", 0)),
                    "default_rate": float(dev.get("default_samplerate", 0) or 0),
                    "default": index == default_in, "rates": rates})
    return out


def choose_rate(sd, device, model_rate: int | None) -> int:
    """A rate the device accepts: the model's, else 48000, 44100, else the device default."""
    errors = _portaudio_errors(sd)
    try:
        info = sd.query_devices(device, kind="input")
    except errors as exc:
        raise AudioError(f"no usable input device {device if device is not None else '(default)'}: {exc}",
                         "run `fieldear devices` and pass --device INDEX or NAME") from None
    candidates = [r for r in (model_rate, *FALLBACK_RATES, int(info.get("default_samplerate", 0) or 0)) if r]
    tried = []
    for rate in dict.fromkeys(candidates):
        try:
            sd.check_input_settings(device=device, channels=1, dtype="float32", samplerate=rate)
            return int(rate)
        except errors:
            tried.append(rate)
    raise AudioError(f"input device {info.get('name', device)!r} accepts none of the rates {tried}",
                     "run `fieldear devices` to see what it supports")


class MicSource(Source):
    """A sounddevice input stream, opened at a rate the device accepts, re-opened with backoff when it fails."""

    live = True

    def __init__(self, device=None, model_rate: int | None = None, chunk_seconds: float = 0.1,
                 queue_seconds: float = 10.0, poll_s: float = 0.5, stall_s: float = 5.0,
                 backoff: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0), max_reconnects: int | None = None,
                 sd=None, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] | None = None):
        super().__init__()
        self.device = device
        self.model_rate = model_rate
        self.chunk_seconds = float(chunk_seconds)
        self.queue_chunks = max(1, int(round(queue_seconds / chunk_seconds)))
        self.poll_s = poll_s
        self.stall_s = stall_s
        self.backoff = backoff
        self.max_reconnects = max_reconnects
        self._sd = sd
        self.clock = clock
        self.sleep = sleep
        self.name = f"mic:{device if device is not None else 'default'}"
        self._stream = None
        self._queue: ChunkQueue | None = None
        self._failed = threading.Event()
        self._closed = False
        self._stop = threading.Event()  # set by close() or the consumer's stop event: ends backoff waits
        self.device_name = None

    @property
    def sd(self):
        if self._sd is None:
            self._sd = import_sounddevice()
        return self._sd

    def _callback(self, indata, frames, time_info, status) -> None:
        # Runs on the audio thread: copy and hand over, nothing else.
        if status and getattr(status, "input_overflow", False):
            self.stats.overruns += 1
        self._queue.offer(np.array(indata[:, 0] if indata.ndim == 2 else indata, dtype=np.float32))

    def _finished(self) -> None:
        if not self._closed:
            self._failed.set()

    def _open_stream(self) -> None:
        sd = self.sd
        rate = choose_rate(sd, self.device, self.model_rate)
        if self.sample_rate and rate != self.sample_rate:
            log.warning("input device now runs at %d Hz (was %d Hz)", rate, self.sample_rate)
        self.sample_rate = rate
        if self._queue is None:
            self._queue = ChunkQueue(self.queue_chunks, self.stats)
        self._failed.clear()
        try:
            stream = sd.InputStream(device=self.device, samplerate=rate, channels=1, dtype="float32",
                                    blocksize=max(1, int(rate * self.chunk_seconds)), callback=self._callback,
                                    finished_callback=self._finished)
            stream.start()
        except _portaudio_errors(sd) as exc:
            raise AudioError(f"cannot open input device {self.device if self.device is not None else '(default)'} "
                             f"at {rate} Hz: {exc}", "check the microphone is plugged in; `fieldear devices`") from None
        self._stream = stream
        try:
            self.device_name = sd.query_devices(self.device, kind="input").get("name")
        except _portaudio_errors(sd):
            self.device_name = None
        log.info("microphone %s open at %d Hz", self.device_name or self.name, rate)

    def open(self) -> None:
        self._closed = False
        self._open_stream()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort()
            stream.close()
        except Exception as exc:  # a dead device may refuse even this
            log.debug("closing the input stream: %s", exc)

    def _stopping(self) -> bool:
        return self._stop.is_set() or (self.stop_event is not None and self.stop_event.is_set())

    def _wait(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True as soon as the source is closed or the consumer asks to stop."""
        end = time.monotonic() + seconds
        while not self._stopping():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self._stop.wait(min(left, 0.1))
        return True

    def _reconnect(self) -> bool:
        """Re-open the device with backoff; False when closed or out of attempts."""
        self._close_stream()
        attempt = 0
        while not self._closed:
            if self.max_reconnects is not None and attempt >= self.max_reconnects:
                return False
            delay = self.backoff[min(attempt, len(self.backoff) - 1)]
            attempt += 1
            if self.sleep is not None:
                self.sleep(delay)
            elif self._wait(delay):
                return False
            try:
                self._open_stream()
            except AudioError as exc:
                log.warning("reconnect attempt %d failed: %s", attempt, exc.message)
                continue
            self.stats.reconnects += 1
            log.warning("input device reconnected after %d attempt(s)", attempt)
            return True
        return False

    def blocks(self) -> Iterator[np.ndarray]:
        if self._stream is None and not self._closed:
            self.open()
        last_audio = self.clock()
        while not self._closed and not self._stopping():
            chunk = self._queue.get(timeout=self.poll_s)
            if chunk is not None:
                last_audio = self.clock()
                self.stats.chunks += 1
                self.stats.samples += len(chunk)
                yield chunk
                continue
            yield np.zeros(0, dtype=np.float32)  # let the caller tick
            stream = self._stream
            dead = self._failed.is_set() or stream is None or not getattr(stream, "active", True)
            stalled = self.clock() - last_audio > self.stall_s
            if dead or stalled:
                log.warning("input device %s: %s; reconnecting", self.device_name or self.name,
                            "stream stopped (unplugged?)" if dead else f"no audio for {self.stall_s:.0f} s")
                if not self._reconnect():
                    if self._closed or self._stopping():
                        return
                    raise AudioError(f"input device {self.device_name or self.name} is gone and did not come back",
                                     "check the microphone; the service will be restarted")
                last_audio = self.clock()

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        self._close_stream()


def record(seconds: float, device=None, rate: int | None = None, sd=None) -> tuple[np.ndarray, int]:
    """Record ``seconds`` from an input device (for ``fieldear devices --test``)."""
    sd = sd or import_sounddevice()
    rate = choose_rate(sd, device, rate)
    try:
        data = sd.rec(int(seconds * rate), samplerate=rate, channels=1, dtype="float32", device=device)
        sd.wait()
    except _portaudio_errors(sd) as exc:
        raise AudioError(f"recording failed: {exc}", "check the microphone is plugged in") from None
    return np.asarray(data, dtype=np.float32).reshape(-1), rate
