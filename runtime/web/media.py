"""Saved event clips as the web server sees them: every path is resolved inside the clips directory, or refused.

A clip is named by the file name under ``<db dir>/clips/`` (what ``ClipRecorder`` writes) or by an event's
``clip_path`` (relative to the database's directory). Anything that resolves outside the clips directory
(``..``, an absolute path, a symlink out) or is not a ``.wav`` file is "not found": the server never reads it.
"""

from __future__ import annotations

import logging
import math
import sys
import wave
from pathlib import Path

log = logging.getLogger(__name__)


def resolve_clip(clips_dir: Path, name: str) -> Path | None:
    """The file ``name`` (relative to the clips directory) if it is a .wav inside it, else None."""
    if not name or "\x00" in name or name.startswith(("/", "\\")) or "\\" in name:
        return None
    root = Path(clips_dir).resolve()
    try:
        path = (root / name).resolve()
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(root) or path == root or path.suffix.lower() != ".wav" or not path.is_file():
        return None
    return path


def event_clip(db: Path, clips_dir: Path, clip_path: str | None) -> Path | None:
    """An event's clip (its ``clip_path`` is relative to the database's directory), confined to the clips dir."""
    if not clip_path:
        return None
    root = Path(clips_dir).resolve()
    candidate = (Path(db).parent / clip_path).resolve()
    if not candidate.is_relative_to(root):
        log.warning("event clip path outside the clips directory refused: %s", clip_path)
        return None
    return resolve_clip(root, str(candidate.relative_to(root)))


def read_clip(path: Path):
    """(float32 mono samples in [-1, 1], sample rate) of a 16-bit PCM WAV clip."""
    import numpy as np

    with wave.open(str(path), "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path.name}: {8 * width}-bit WAV, expected 16-bit")
    x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    return x, rate


def level_dbfs(path: Path) -> dict | None:
    """RMS and peak level (dBFS) of a 16-bit clip, or None when it cannot be read. Standard library only (the
    live page must not pull numpy into the server)."""
    import array

    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                return None
            raw = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        log.debug("cannot read %s: %s", path, exc)
        return None
    pcm = array.array("h")
    pcm.frombytes(raw[: len(raw) // 2 * 2])
    if sys.byteorder == "big":
        pcm.byteswap()
    if not len(pcm):
        return None
    rms = math.sqrt(math.fsum(x * x for x in pcm) / len(pcm)) / 32768.0
    peak = max(max(pcm), -min(pcm)) / 32768.0

    def db(v: float):
        return round(20 * math.log10(v), 1) if v > 0 else None

    return {"rms_dbfs": db(rms), "peak_dbfs": db(peak)}
