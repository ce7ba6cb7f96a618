"""Site audio saved for training: ``fieldear background record`` (issue 12). Audio from a source (microphone or
file) is written as WAV segments of ``segment_s`` seconds, each made atomically (a crash leaves at most a .tmp),
until ``seconds`` are saved, the source ends, or ``stop`` is set."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_S = 60.0


@dataclass
class Recorded:
    files: list[Path]
    seconds: float
    rate: int


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]


def record_background(source, out_dir, seconds: float, segment_s: float = DEFAULT_SEGMENT_S,
                      stop: threading.Event | None = None, stamp: str = "") -> Recorded:
    """Save up to ``seconds`` of ``source`` (an audio.sources.Source) under ``out_dir`` as mono 16-bit WAV files
    ``bg_<stamp>_<source>_<k>.wav`` of ``segment_s`` seconds (the last may be shorter)."""
    from runtime.audio.wav import write_wav

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    files: list[Path] = []
    pending: list[np.ndarray] = []
    have = total = 0
    prefix = "_".join(p for p in ("bg", _safe(stamp), _safe(source.name)) if p)

    def flush() -> None:
        nonlocal pending, have
        if have:
            path = out / f"{prefix}_{len(files):04d}.wav"
            write_wav(path, np.concatenate(pending), source.sample_rate)
            files.append(path)
            log.info("saved %s (%.1f s; %.1f of %.0f s)", path.name, have / source.sample_rate,
                     total / source.sample_rate, seconds)
        pending, have = [], 0

    with source:
        source.set_stop(stop)
        rate = int(source.sample_rate)
        limit, per_file = int(seconds * rate), max(1, int(segment_s * rate))
        for chunk in source.blocks():
            chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)[: limit - total]
            while len(chunk):
                take = chunk[: per_file - have]
                pending.append(take)
                have += len(take)
                total += len(take)
                chunk = chunk[len(take):]
                if have >= per_file:
                    flush()
            if total >= limit or stop.is_set():
                break
        flush()
    return Recorded(files, total / rate if rate else 0.0, rate)
