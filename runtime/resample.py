"""Rational-rate resampling that gives the same samples whether fed whole or in chunks.

scipy's default ``resample_poly`` filter is too soft for the backbone: its transition band is
centred on the old Nyquist, so images above it leak into the top mel bands. Here the stop band
starts at the lower Nyquist (about -80 dB from there on) with 64 taps per output phase.
The polyphase filtering itself is scipy's ``upfirdn``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.signal

TAPS_PER_PHASE = 64
CUTOFF = 0.92  # -6 dB point, as a fraction of the lower Nyquist
KAISER_BETA = 8.0


@functools.lru_cache(maxsize=16)
def ratio(in_rate: int, out_rate: int) -> tuple[int, int]:
    g = math.gcd(int(in_rate), int(out_rate))
    return int(out_rate) // g, int(in_rate) // g


@functools.lru_cache(maxsize=16)
def design_filter(up: int, down: int) -> np.ndarray:
    """Low-pass FIR at the upsampled rate, gain ``up``, odd length."""
    n = (TAPS_PER_PHASE * max(up, down)) | 1
    h = scipy.signal.firwin(n, CUTOFF / max(up, down), window=("kaiser", KAISER_BETA)) * up
    return h.astype(np.float32)


class StreamResampler:
    """Push chunks, get resampled chunks; concatenated output equals ``resample(whole)``.

    Output sample n is ``sum_k h[k] * u[n*down + D - k]`` with ``u`` the zero-stuffed input and
    ``D = (len(h) - 1) // 2`` (zero phase); there are ``ceil(len * up / down)`` outputs in all.
    """

    def __init__(self, in_rate: int, out_rate: int):
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.up, self.down = ratio(self.in_rate, self.out_rate)
        self.passthrough = self.up == self.down
        self.h = design_filter(self.up, self.down) if not self.passthrough else None
        self._delay = (len(self.h) - 1) // 2 if self.h is not None else 0
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute input index of _buf[0]
        self._n_in = 0
        self._n_out = 0

    def _lowest_input(self, n: int) -> int:
        """Lowest input index output n depends on."""
        return -((-(n * self.down + self._delay - len(self.h) + 1)) // self.up)

    def push(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if self.passthrough:
            return chunk
        self._n_in += len(chunk)
        self._buf = np.concatenate([self._buf, chunk])
        # output n is ready when its highest input index (n*down + D)//up is already in
        n_ready = (self._n_in * self.up - self._delay - 1) // self.down + 1
        return self._emit(max(n_ready, self._n_out))

    def flush(self) -> np.ndarray:
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        total = -((-self._n_in * self.up) // self.down)
        return self._emit(total)

    def _emit(self, n_end: int) -> np.ndarray:
        n0 = self._n_out
        if n_end <= n0:
            return np.zeros(0, dtype=np.float32)
        up, down, d = self.up, self.down, self._delay
        lo = self._lowest_input(n0)
        hi = min((n_end - 1) * down + d, (self._n_in - 1) * up) // up if self._n_in else -1
        # segment x[lo..hi], zeros before the stream start
        seg_from = max(lo, self._buf_start)
        seg = self._buf[seg_from - self._buf_start : hi + 1 - self._buf_start]
        if lo < seg_from:
            seg = np.concatenate([np.zeros(seg_from - lo, np.float32), seg])
        if len(seg) == 0:
            seg = np.zeros(1, np.float32)
        p = (lo * up - n0 * down - d) % down
        m0 = (n0 * down + d + p - lo * up) // down
        h = self.h if p == 0 else np.concatenate([np.zeros(p, np.float32), self.h])
        z = scipy.signal.upfirdn(h, seg, up, down)
        out = np.zeros(n_end - n0, dtype=np.float32)
        got = z[m0 : m0 + (n_end - n0)]
        out[: len(got)] = got
        self._n_out = n_end
        keep_from = max(self._lowest_input(n_end), self._buf_start)
        self._buf = self._buf[keep_from - self._buf_start :].copy()
        self._buf_start = keep_from
        return out


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Whole-signal resampling, identical to streaming the same samples through StreamResampler."""
    r = StreamResampler(in_rate, out_rate)
    head = r.push(samples)
    return np.concatenate([head, r.flush()]) if not r.passthrough else head
