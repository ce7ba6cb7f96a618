"""Event clips: each event's audio with pre/post-roll, saved as 16-bit WAV next to the log, within a quota.

``ClipRecorder`` keeps the last ``max_clip_s + pre_s + post_s`` seconds of source audio in a ring of chunks.
When an event is logged it is queued; once the stream is ``post_s`` past its end the clip is cut and written
to ``<db dir>/clips/`` and the event row's ``clip_path`` is set (relative to the database's directory), with
where the clip starts in the stream (the log's ``clips`` table: the pre-roll is cut short at the ring's start).
When the clips directory would exceed ``quota_mb``, the oldest clips are deleted first. No clip is saved when
the disk would be left with less than ``min_free_mb`` free (counted in ``skipped_low_space``: the log database
needs the space more). Half-written clips (``*.tmp``, a run killed mid-write) are deleted at start.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import deque
from pathlib import Path

import numpy as np

from runtime.audio.wav import write_wav

log = logging.getLogger(__name__)


def free_mb(directory: Path) -> float:
    """Free space (MB) for unprivileged users on the filesystem holding ``directory``."""
    return shutil.disk_usage(directory).free / 1e6


class ClipRecorder:
    def __init__(self, directory, pre_s: float = 1.0, post_s: float = 1.0, quota_mb: float = 500.0,
                 max_clip_s: float = 30.0, min_free_mb: float = 200.0, free_space=free_mb):
        self.directory = Path(directory)
        self.pre_s = float(pre_s)
        self.post_s = float(post_s)
        self.quota_bytes = int(float(quota_mb) * 1e6)
        self.max_clip_s = float(max_clip_s)
        self.min_free_mb = float(min_free_mb)
        self.free_space = free_space
        self.rate = 0
        self.store = None
        self._chunks: deque = deque()
        self._buf_start = 0  # absolute sample index of the first buffered sample
        self._buf_len = 0
        self._pending: list[dict] = []
        self.written = 0
        self.deleted = 0
        self.failed = 0
        self.skipped_low_space = 0

    def start(self, rate: int, store) -> None:
        self.rate = int(rate)
        self.store = store
        self._keep = int((self.max_clip_s + self.pre_s + self.post_s + 5.0) * self.rate)
        self.directory.mkdir(parents=True, exist_ok=True)
        for tmp in self.directory.glob("*.tmp"):  # left by a run killed while writing a clip
            tmp.unlink(missing_ok=True)
            log.info("deleted a half-written clip: %s", tmp)

    def push(self, chunk: np.ndarray) -> None:
        self._chunks.append(chunk)
        self._buf_len += len(chunk)
        while self._chunks and self._buf_len - len(self._chunks[0]) >= self._keep:
            old = self._chunks.popleft()
            self._buf_len -= len(old)
            self._buf_start += len(old)

    def request(self, row: dict) -> None:
        self._pending.append(row)

    def poll(self, offset_s: float) -> None:
        ready = [r for r in self._pending if r["end_s"] + self.post_s <= offset_s]
        for row in ready:
            self._pending.remove(row)
            self._write(row)

    def finish(self) -> None:
        """At the end of the stream: write every pending clip with the audio there is."""
        for row in self._pending:
            self._write(row)
        self._pending.clear()

    def _cut(self, start_s: float, end_s: float) -> tuple[np.ndarray, float]:
        """(the clip's samples, where it starts in the stream in seconds)."""
        a = max(int((start_s - self.pre_s) * self.rate), self._buf_start)
        b = min(int((end_s + self.post_s) * self.rate), self._buf_start + self._buf_len)
        b = min(b, a + int((self.max_clip_s + self.pre_s + self.post_s) * self.rate))
        if b <= a:
            return np.zeros(0, np.float32), a / self.rate
        audio = np.concatenate(list(self._chunks)) if len(self._chunks) > 1 else self._chunks[0]
        return audio[a - self._buf_start : b - self._buf_start], a / self.rate

    def _usage(self) -> list[tuple[Path, int]]:
        return sorted((p, p.stat().st_size) for p in self.directory.glob("*.wav"))

    def _space_for(self, size: int) -> bool:
        try:
            left_mb = self.free_space(self.directory) - size / 1e6
        except OSError:
            return True  # cannot tell: writing reports its own error
        if left_mb >= self.min_free_mb:
            return True
        self.skipped_low_space += 1
        if self.skipped_low_space == 1:
            log.warning("disk nearly full (%.0f MB free, floor %.0f MB): event clips are not saved",
                        left_mb + size / 1e6, self.min_free_mb)
        return False

    def _write(self, row: dict) -> None:
        samples, clip_start_s = self._cut(row["start_s"], row["end_s"])
        if not len(samples):
            return
        size = 44 + 2 * len(samples)
        if size > self.quota_bytes or not self._space_for(size):
            return
        try:
            files = self._usage()
            total = sum(s for _, s in files)
            while files and total + size > self.quota_bytes:
                oldest, s = files.pop(0)
                oldest.unlink(missing_ok=True)
                total -= s
                self.deleted += 1
            stamp = re.sub(r"[^0-9T]", "", row["start_utc"])[:15]
            label = re.sub(r"[^A-Za-z0-9_-]", "_", row["label"])
            path = self.directory / f"{stamp}_{int(row['id']):08d}_{label}.wav"
            write_wav(path, samples, self.rate)
        except OSError as exc:
            self.failed += 1
            if self.failed == 1:
                log.warning("cannot write event clips to %s: %s", self.directory, exc)
            return
        self.written += 1
        rel = path.relative_to(self.store.path.parent) if self.directory.is_relative_to(self.store.path.parent) else path
        self.store.set_clip_path(row["id"], str(rel), clip_start_s)
