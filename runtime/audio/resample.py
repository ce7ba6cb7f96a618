"""Rational-rate resampling that gives the same samples whether fed whole or in chunks.

scipy's default ``resample_poly`` filter is too soft for the backbone: its transition band is
centred on the old Nyquist, so images above it leak into the top mel bands. Here the stop band
starts at the lower Nyquist (about -80 dB from there on) with 64 taps per output phase.
The polyphase filtering is done here in numpy (gathered rows summed with einsum: the same sums for any
chunking, so chunk invariance stays bit-exact), without importing scipy.signal (0.5-1 s at start-up); the
filter is scipy's ``firwin`` arithmetic with a Kaiser window, bit for bit.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.special

from runtime.errors import AudioError

TAPS_PER_PHASE = 64
CUTOFF = 0.92  # -6 dB point, as a fraction of the lower Nyquist
KAISER_BETA = 8.0
# Longest filter a rate pair may need (4 M taps, 16 MB): 44101 Hz -> 16 kHz needs 2.8 M, 1000003 Hz 64 M.
MAX_FILTER_TAPS = 1 << 22
PER_PHASE_MIN = 64  # outputs per phase from which a chunk is filtered phase by phase (same sums either way)


@functools.lru_cache(maxsize=16)
def ratio(in_rate: int, out_rate: int) -> tuple[int, int]:
    g = math.gcd(int(in_rate), int(out_rate))
    return int(out_rate) // g, int(in_rate) // g


def check_ratio(in_rate: int, out_rate: int) -> None:
    """Refuse a rate pair whose polyphase filter would be huge (e.g. 1000003 Hz -> 16 kHz: 64 M taps)."""
    if TAPS_PER_PHASE * max(ratio(in_rate, out_rate)) > MAX_FILTER_TAPS:
        raise AudioError(f"cannot resample {in_rate} Hz to {out_rate} Hz (filter too long)",
                         f"convert the file to a common rate first, e.g. sox in.wav -r {out_rate} out.wav")


@functools.lru_cache(maxsize=16)
def design_filter(up: int, down: int) -> np.ndarray:
    """Low-pass FIR at the upsampled rate, gain ``up``, odd length.

    ``scipy.signal.firwin(n, cutoff, window=("kaiser", KAISER_BETA)) * up``, computed the same way.
    """
    n = (TAPS_PER_PHASE * max(up, down)) | 1
    cutoff = CUTOFF / max(up, down)
    alpha = 0.5 * (n - 1)
    m = np.arange(0, n) - alpha
    h = cutoff * np.sinc(cutoff * m)
    h *= scipy.special.i0(KAISER_BETA * np.sqrt(1 - ((np.arange(0, n) - alpha) / alpha) ** 2.0)) / scipy.special.i0(KAISER_BETA)
    h /= np.sum(h)
    return (h * up).astype(np.float32)


@functools.lru_cache(maxsize=16)
def polyphase_bank(up: int, down: int) -> np.ndarray:
    """design_filter's taps by phase, reversed: ``bank[p, T-1-j] = h[p + j*up]`` (zero-padded to T taps)."""
    h = design_filter(up, down)
    taps = -(-len(h) // up)
    padded = np.zeros(up * taps, np.float32)
    padded[: len(h)] = h
    return np.ascontiguousarray(padded.reshape(taps, up).T[:, ::-1])


def polyphase_outputs(bank: np.ndarray, seg: np.ndarray, up: int, down: int, shift: int, count: int) -> np.ndarray:
    """``c[shift + i*down]`` for i < count, c being seg zero-stuffed by ``up`` and convolved with the filter.

    ``c[t] = sum_j h[p + j*up] * seg[b - j]`` with ``b, p = divmod(t, up)``: each output is one row of input
    window times one row of the phase bank. Long chunks take the rows phase by phase (outputs ``up`` apart
    share a phase); short ones gather all rows at once, avoiding ``up`` small calls. Either way each row is
    summed by einsum's same contiguous dot kernel (not BLAS, whose sums depend on how many rows a call gets),
    so the output is independent of the chunking.
    """
    taps = bank.shape[1]
    xp = np.concatenate([np.zeros(taps - 1, np.float32), seg, np.zeros(taps + down + 1, np.float32)])
    windows = np.lib.stride_tricks.sliding_window_view(xp, taps)  # windows[b] = seg[b-taps+1 .. b]
    out = np.empty(count, np.float32)
    if count >= PER_PHASE_MIN * up:  # long chunks: one strided product per phase, no gathering
        for r in range(min(up, count)):
            b, p = divmod(shift + r * down, up)
            k = len(range(r, count, up))
            out[r::up] = np.einsum("ij,j->i", windows[b : b + down * (k - 1) + 1 : down], bank[p])
        return out
    step = max(1, (1 << 20) // taps)  # short chunks: gather rows for all phases (temporaries ~4 MB at most)
    for i0 in range(0, count, step):
        t = shift + np.arange(i0, min(count, i0 + step), dtype=np.int64) * down
        b, p = np.divmod(t, up)
        out[i0 : i0 + len(t)] = np.einsum("ij,ij->i", windows[b], bank[p])
    return out


class StreamResampler:
    """Push chunks, get resampled chunks; concatenated output equals ``resample(whole)``.

    Output sample n is ``sum_k h[k] * u[n*down + D - k]`` with ``u`` the zero-stuffed input and
    ``D = (len(h) - 1) // 2`` (zero phase); there are ``ceil(len * up / down)`` outputs in all.
    """

    def __init__(self, in_rate: int, out_rate: int):
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        check_ratio(self.in_rate, self.out_rate)
        self.up, self.down = ratio(self.in_rate, self.out_rate)
        self.passthrough = self.up == self.down
        self.h = design_filter(self.up, self.down) if not self.passthrough else None
        self._bank = polyphase_bank(self.up, self.down) if not self.passthrough else None
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
        # output n is z[n*down + d - lo*up] of the full-rate convolution of the segment: shift by d - lo*up
        shift = n0 * down + d - lo * up
        out = polyphase_outputs(self._bank, seg, up, down, shift, n_end - n0)
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
