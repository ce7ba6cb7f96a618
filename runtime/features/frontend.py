"""The one log-mel frontend: used on the device, in batch prediction and in training.

Each DSP step is a pure function (arrays in, arrays out). ``logmel`` computes a whole clip;
``StreamingFrontend`` computes the same frames incrementally from chunks of any size (each hop
transforms only new audio). ``BlockAssembler`` cuts frames into the model's input blocks.
Every step computes each frame on its own, in a fixed order (no BLAS products, whose float32 sums
depend on how many frames a call gets), so streamed frames equal whole-clip frames bit for bit.

Framing follows librosa's ``melspectrogram(center=True, pad_mode="constant", htk=True, norm=1)``:
frame ``i`` is centred on sample ``i * hop``; the signal is zero-padded by ``n_fft // 2`` on both
ends, so a clip of ``n`` samples has ``1 + n // hop`` frames. Compression is aisfx's
``log10(log_mult * S + 1) / log_div``.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields

import numpy as np
import scipy.fft

from runtime.errors import BundleError


@dataclass(frozen=True)
class FrontendParams:
    """Everything that defines the features. Stored in every bundle's model.json."""

    sample_rate: int
    n_fft: int
    hop: int
    n_mels: int
    fmin: float
    fmax: float
    log_mult: float
    log_div: float
    block_frames: int
    block_hop: int
    # "logmel": the log-mel above; "raw": the resampled samples themselves, one sample a frame (hop 1, n_mels 1),
    # for a backbone that computes its own spectrogram (BirdNET: 48 kHz, 3 s windows)
    kind: str = "logmel"

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in FRONTEND_KINDS:
            problems.append(f"kind must be one of {', '.join(FRONTEND_KINDS)}")
        elif self.kind == "raw" and (self.hop != 1 or self.n_mels != 1):
            problems.append("a raw frontend has hop 1 and n_mels 1 (one sample a frame)")
        if self.sample_rate <= 0:
            problems.append("sample_rate must be > 0")
        if self.n_fft <= 0 or self.n_fft % 2:
            problems.append("n_fft must be a positive even number")
        if not 0 < self.hop <= self.n_fft:
            problems.append("hop must be in 1..n_fft")
        if self.n_mels <= 0:
            problems.append("n_mels must be > 0")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            problems.append("need 0 <= fmin < fmax <= sample_rate/2")
        if self.log_mult <= 0 or self.log_div <= 0:
            problems.append("log_mult and log_div must be > 0")
        if self.block_frames <= 0 or not 0 < self.block_hop <= self.block_frames:
            problems.append("need block_frames > 0 and 0 < block_hop <= block_frames")
        if problems:
            raise BundleError("invalid frontend parameters: " + "; ".join(problems))

    @property
    def block_seconds(self) -> float:
        """Duration one block covers, in seconds."""
        return self.block_frames * self.hop / self.sample_rate

    @property
    def block_hop_seconds(self) -> float:
        """Time between the starts of two blocks, in seconds."""
        return self.block_hop * self.hop / self.sample_rate

    def with_block_hop(self, block_hop: int) -> "FrontendParams":
        return FrontendParams(**{**asdict(self), "block_hop": int(block_hop)})

    def to_dict(self) -> dict:
        """The fields, ``kind`` only when not "logmel" (so log-mel bundles read the same as before it existed)."""
        data = asdict(self)
        if self.kind == "logmel":
            del data["kind"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "FrontendParams":
        names = {f.name for f in fields(cls)}
        data = {"kind": "logmel", **data}
        missing = sorted(names - set(data))
        unknown = sorted(set(data) - names)
        if missing or unknown:
            raise BundleError(
                f"frontend parameters do not match this fieldear: missing {missing}, unknown {unknown}",
                "rebuild the bundle with this version of fieldear",
            )
        types = {"sample_rate": int, "n_fft": int, "hop": int, "n_mels": int,
                 "block_frames": int, "block_hop": int, "kind": str}
        try:
            return cls(**{k: types.get(k, float)(v) for k, v in data.items()})
        except (TypeError, ValueError) as exc:
            raise BundleError(f"frontend parameters are not numbers: {exc}") from None


FRONTEND_KINDS = ("logmel", "raw")

# The aisfx backbone's input (Ma & Lerch, ISMIR 2022): 44.1 kHz, 2048/1024, 96 HTK mels over
# 0-22050 Hz, blocks of 100 frames (2.32 s) every 50 frames (1.16 s).
BACKBONE = FrontendParams(
    sample_rate=44100, n_fft=2048, hop=1024, n_mels=96, fmin=0.0, fmax=22050.0,
    log_mult=1e4, log_div=9.457798957824707, block_frames=100, block_hop=50,
)

# The cheaper frontend of the small from-scratch CNN: 16 kHz, 32 ms / 16 ms, 64 mels,
# blocks of 62 frames (~1 s) every 31 frames.
SMALL = FrontendParams(
    sample_rate=16000, n_fft=512, hop=256, n_mels=64, fmin=50.0, fmax=8000.0,
    log_mult=1e4, log_div=9.457798957824707, block_frames=62, block_hop=31,
)

# BirdNET v2.4's input (an optional, user-installed backbone: convert/families/birdnet.py): raw 48 kHz samples,
# windows of 3 s every 1.5 s.
BIRDNET_RAW = FrontendParams(
    sample_rate=48000, n_fft=2, hop=1, n_mels=1, fmin=0.0, fmax=24000.0, log_mult=1.0, log_div=1.0,
    block_frames=144000, block_hop=72000, kind="raw",
)


# ---------------------------------------------------------------- pure DSP steps


@functools.lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (as librosa and most STFT code use), float32.

    The same arithmetic as ``scipy.signal.get_window("hann", n_fft, fftbins=True)`` (bit for bit), without
    importing scipy.signal, which costs most of a second at start-up.
    """
    fac = np.linspace(-np.pi, np.pi, n_fft + 1)
    w = np.zeros(n_fft + 1)
    for k, a in enumerate((0.5, 0.5)):  # scipy's general_cosine with a = [0.5, 0.5], symmetric, one longer
        w += a * np.cos(k * fac)
    return w[:-1].astype(np.float32)


def hz_to_mel_htk(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz_htk(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """HTK-mel triangles with unit sum, shape (n_fft//2 + 1, n_mels), float32.

    Same construction as librosa.filters.mel(htk=True, norm=1): triangles linear in Hz between
    mel-spaced edges, each band's weights scaled to sum to one.
    """
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz_htk(np.linspace(hz_to_mel_htk(fmin), hz_to_mel_htk(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    sums = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, sums, out=np.zeros_like(weights), where=sums > 0)
    return np.ascontiguousarray(weights.T, dtype=np.float32)


def frame_signal(padded: np.ndarray, n_fft: int, hop: int, n_frames: int) -> np.ndarray:
    """Frames ``i*hop : i*hop + n_fft`` for i < n_frames, as a read-only strided view."""
    if n_frames <= 0:
        return np.zeros((0, n_fft), dtype=np.float32)
    padded = np.ascontiguousarray(padded, dtype=np.float32)
    if (n_frames - 1) * hop + n_fft > len(padded):
        raise ValueError(f"{n_frames} frames of {n_fft} every {hop} need more than {len(padded)} samples")
    # the view made directly (bounds checked above): sliding_window_view's overhead is ~10 us a call
    view = np.ndarray((n_frames, n_fft), np.float32, buffer=padded, strides=(hop * 4, 4))
    view.flags.writeable = False
    return view


# scipy.fft (pocketfft) transforms many frames in groups of its SIMD width, 4 float32 lanes on x86 (SSE2) and on
# aarch64 (NEON), and the frames left over one by one in scalar code. On aarch64 the two paths round differently
# (the compiler fuses multiply-adds differently), so there a frame's spectrum depended on how many frames the call
# had: streamed frames differed from whole-clip frames by a float32 step (found by the arm64 lane, .ci/arm64.sh).
# squared_spectrum pads each call with zero frames to whole groups, so every frame takes the SIMD path.
FFT_GROUP = 4


def squared_spectrum(frames: np.ndarray, window: np.ndarray) -> np.ndarray:
    """re^2 and im^2 of rfft(window * frame), float32, bin-major: shape (n_fft//2 + 1, 2 * n_frames).

    Row k holds bin k of every frame, as the pairs ``re^2, im^2`` (columns 2i, 2i+1 are frame i); their
    sum is the power spectrum. scipy transforms the windowed frames (one contiguous row each) along the
    transposed view's axis 0, so the output comes out bin-major at no extra cost; each frame is still its
    own transform, by the same (SIMD) code whatever the number of frames (see FFT_GROUP). The squares are
    taken in place on the transform's output.
    """
    n = len(frames)
    windowed = np.zeros((n + (-n % FFT_GROUP), len(window)), dtype=np.float32)
    np.multiply(frames, window, out=windowed[:n])
    spec = scipy.fft.rfft(windowed.T, axis=0, overwrite_x=True)
    if spec.dtype != np.complex64:
        spec = spec.astype(np.complex64)
    parts = spec.view(np.float32)
    np.multiply(parts, parts, out=parts)
    return parts[:, : 2 * n]


@functools.lru_cache(maxsize=8)
def mel_filterbank_sparse(sample_rate: int, n_fft: int, n_mels: int, fmin: float,
                          fmax: float) -> "scipy.sparse.csr_array":
    """``mel_filterbank(...).T`` as a CSR matrix (n_mels, n_fft//2 + 1): each band's nonzero weights, in bin order.

    Each FFT bin lies on at most two triangles (the rising side of one band, the falling side of the one
    below), so this holds about 2 * n_bins weights instead of n_bins * n_mels. scipy.sparse is imported
    here, on first use, not at start-up (about 20 ms).
    """
    import scipy.sparse

    return scipy.sparse.csr_array(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).T)


def mel_power(parts: np.ndarray, filterbank: "scipy.sparse.csr_array", out: np.ndarray | None = None) -> np.ndarray:
    """squared_spectrum's (n_bins, 2 * n_frames) to band-major mel power (n_mels, n_frames).

    ``mel[b, i] = sum_k w[b, k] re[k, i]^2 + sum_k w[b, k] im[k, i]^2``, each sum taken in bin order from
    zero: scipy's CSR-times-dense product adds ``w[b, k] * parts[k, :]`` row by row, in compiled code, and
    always by that one kernel (the input has at least two columns). Unlike a BLAS matrix product, whose
    float32 summation order depends on how many frames a call gets, this makes every frame's mel power a
    function of that frame alone, so chunked streaming and whole clips agree bit for bit. It is also
    cheap: about 2 * n_bins multiply-adds per frame and part.
    """
    both = filterbank @ parts
    return np.add(both[:, 0::2], both[:, 1::2], out=out)


def log_compress(mel: np.ndarray, log_mult: float, log_div: float, out: np.ndarray | None = None) -> np.ndarray:
    """aisfx's compression: log10(log_mult * mel + 1) / log_div, as float32.

    With ``out`` (which may be ``mel`` itself) the steps run in place there, with no temporaries.
    """
    x = np.multiply(mel, np.float32(log_mult), out=out)
    np.add(x, np.float32(1.0), out=x)
    np.log10(x, out=x)
    np.divide(x, np.float32(log_div), out=x)
    return x.astype(np.float32, copy=False)


# Samples per transform call in frames_to_logmel (128 frames of the backbone's 2048, ~3 s): bounds a call's
# temporaries (about 1 MB each), which otherwise grow with the input and, freshly mapped, can cost more
# page faults than transform time. Results do not depend on it (every step is per frame).
BLOCK_SAMPLES = 1 << 18


def frames_to_logmel(frames: np.ndarray, params: FrontendParams) -> np.ndarray:
    """Raw sample frames (n, n_fft) to log-mel frames (n, n_mels)."""
    n = len(frames)
    window = hann_window(params.n_fft)
    filterbank = mel_filterbank_sparse(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax)
    mel = np.empty((params.n_mels, n), dtype=np.float32)  # band-major, as mel_power gives it
    step = max(1, BLOCK_SAMPLES // params.n_fft)
    for i in range(0, n, step):
        mel_power(squared_spectrum(frames[i : i + step], window), filterbank, out=mel[:, i : i + step])
    # in place on our own contiguous temporary (contiguous keeps numpy's log10 on its fast SIMD loop),
    # then one copy to frame-major
    log_compress(mel, params.log_mult, params.log_div, out=mel)
    return np.ascontiguousarray(mel.T)


def n_frames_for(n_samples: int, params: FrontendParams) -> int:
    """Number of centred frames for a clip of n_samples (none for an empty clip)."""
    return 1 + n_samples // params.hop if n_samples > 0 else 0


def logmel(samples: np.ndarray, params: FrontendParams) -> np.ndarray:
    """Whole-clip log-mel, shape (1 + len // hop, n_mels). Samples at params.sample_rate."""
    x = np.asarray(samples, dtype=np.float32)
    half = params.n_fft // 2
    padded = np.concatenate([np.zeros(half, np.float32), x, np.zeros(half, np.float32)])
    frames = frame_signal(padded, params.n_fft, params.hop, n_frames_for(len(x), params))
    return frames_to_logmel(frames, params)


def block_starts(n_frames: int, params: FrontendParams) -> list[int]:
    """Start frames of the blocks cut from n_frames frames.

    Full blocks every block_hop frames; a clip shorter than one block gives one zero-padded block.
    """
    if n_frames <= 0:
        return []
    if n_frames < params.block_frames:
        return [0]
    return list(range(0, n_frames - params.block_frames + 1, params.block_hop))




# ---------------------------------------------------------------- streaming


class StreamingFrontend:
    """Incremental log-mel: push chunks of any size, get exactly the frames ``logmel`` gives.

    Only new audio is transformed; at most n_fft - hop + chunk samples are held.
    """

    def __init__(self, params: FrontendParams):
        self.params = params
        self._buf = np.zeros(params.n_fft // 2, dtype=np.float32)  # centred first frame
        self._samples_in = 0
        self._frames_out = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add samples; return the log-mel frames that became complete (n, n_mels)."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._samples_in += len(chunk)
        self._buf = np.concatenate([self._buf, chunk]) if len(chunk) else self._buf
        return self._emit(limit=None)

    def flush(self) -> np.ndarray:
        """End of stream: zero-pad the tail and return the remaining frames."""
        self._buf = np.concatenate([self._buf, np.zeros(self.params.n_fft // 2, np.float32)])
        frames = self._emit(limit=n_frames_for(self._samples_in, self.params))
        return frames

    def _emit(self, limit: int | None) -> np.ndarray:
        p = self.params
        if len(self._buf) < p.n_fft:
            return np.zeros((0, p.n_mels), dtype=np.float32)
        n = 1 + (len(self._buf) - p.n_fft) // p.hop
        if limit is not None:
            n = max(0, min(n, limit - self._frames_out))
        out = frames_to_logmel(frame_signal(self._buf, p.n_fft, p.hop, n), p)
        self._buf = self._buf[n * p.hop :].copy()
        self._frames_out += n
        return out


class RawFrontend:
    """The "raw" frontend: every sample is a frame of one value, so blocks are windows of samples."""

    def __init__(self, params: FrontendParams):
        self.params = params

    def push(self, chunk: np.ndarray) -> np.ndarray:
        return np.asarray(chunk, dtype=np.float32).reshape(-1, 1)

    def flush(self) -> np.ndarray:
        return np.zeros((0, 1), dtype=np.float32)


def streaming_frontend(params: FrontendParams):
    """The incremental frontend of ``params``: StreamingFrontend (log-mel) or RawFrontend."""
    return RawFrontend(params) if params.kind == "raw" else StreamingFrontend(params)


class BlockAssembler:
    """Frames in, model blocks out, at the params' block size and hop (the rule of ``block_starts``)."""

    def __init__(self, params: FrontendParams):
        self.params = params
        self._frames = np.zeros((0, params.n_mels), dtype=np.float32)
        self._next_start = 0  # absolute frame index of the next block's first frame
        self._offset = 0  # absolute frame index of self._frames[0]
        self.blocks_out = 0

    def push(self, frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add frames; return (start_frame, block) for every block that became complete."""
        p = self.params
        if len(frames):
            self._frames = np.concatenate([self._frames, frames])
        out = []
        while self._next_start + p.block_frames <= self._offset + len(self._frames):
            s = self._next_start - self._offset
            out.append((self._next_start, self._frames[s : s + p.block_frames].copy()))
            self._next_start += p.block_hop
        drop = self._next_start - self._offset
        if drop > 0:
            self._frames = self._frames[drop:]
            self._offset += drop
        self.blocks_out += len(out)
        return out

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """End of stream: a stream shorter than one block still yields one zero-padded block."""
        if self.blocks_out or not len(self._frames):
            return []
        block = np.zeros((self.params.block_frames, self.params.n_mels), dtype=np.float32)
        block[: len(self._frames)] = self._frames[: self.params.block_frames]
        self.blocks_out += 1
        return [(0, block)]
