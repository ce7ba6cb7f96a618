"""WAV (RIFF, RF64/BW64) header parsing and sample decoding with numpy: the chunk parser behind runtime.audio.files."""

from __future__ import annotations

import logging
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from runtime.errors import AudioError

log = logging.getLogger(__name__)


# fmt chunk format tags
WAVE_FORMAT_PCM = 0x0001

WAVE_FORMAT_IEEE_FLOAT = 0x0003

WAVE_FORMAT_ALAW = 0x0006

WAVE_FORMAT_MULAW = 0x0007

WAVE_FORMAT_MPEGLAYER3 = 0x0055

WAVE_FORMAT_EXTENSIBLE = 0xFFFE

# Bytes 2..15 of every KSDATAFORMAT_SUBTYPE_* GUID whose first two bytes are a format tag.
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")

_TAG_NAMES = {
    0x0002: "MS ADPCM", 0x0011: "IMA ADPCM", 0x0031: "GSM 6.10", 0x0040: "G.721 ADPCM",
    0x0050: "MPEG", 0x0055: "MP3",
}

_UNSET32 = 0xFFFFFFFF

_UNFINALISED = (0, 0x7FFFFFFF, 0xFFFFFFFF)  # data sizes streaming writers leave in the header

# What a header may claim before the file is refused: rates outside these are corrupt, not audio we can use.
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, from its header only.

    For WAV decoded here ``frames`` counts the whole frames actually in the file (a truncated file
    has ``truncated`` set); for files read by libsndfile it is libsndfile's count (an estimate for MP3).
    """

    path: Path
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    encoding: str  # "pcm8", "pcm16", "pcm24", "pcm32", "float32", "float64", "alaw", "mulaw", "flac", ...
    container: str = "wav"  # "wav", "rf64", or the libsndfile format name in lowercase ("flac", "ogg", ...)
    truncated: bool = False  # the header promised more audio than the file holds


@dataclass(frozen=True)
class WavLayout:
    """Where and how the samples of a natively decoded WAV file are stored."""

    info: AudioInfo
    data_offset: int
    block_align: int
    sample_width: int  # bytes per sample in the container
    declared_frames: int  # what the header says (may exceed info.frames)
    soundfile: bool  # the codec is not decoded here: hand the file to libsndfile
    unfinalised: bool  # the header has no length (streamed WAV): read to the end of the file


def _alaw_table() -> np.ndarray:
    """A-law byte -> 16-bit linear value (same values as the old audioop.alaw2lin), as float32."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    mantissa = (a & 0x0F) << 4
    segment = (a & 0x70) >> 4
    mag = np.where(segment == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(segment - 1, 0))
    return np.where(a & 0x80, mag, -mag).astype(np.float32)


def _mulaw_table() -> np.ndarray:
    """mu-law byte -> 16-bit linear value (same values as the old audioop.ulaw2lin), as float32."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -mag, mag).astype(np.float32)


def _g711_table(encoding: str) -> np.ndarray:
    if encoding not in _TABLES:
        table = _alaw_table() if encoding == "alaw" else _mulaw_table()
        _TABLES[encoding] = table / np.float32(32768.0)
    return _TABLES[encoding]


def decode(raw: bytes, encoding: str, channels: int) -> np.ndarray:
    """Little-endian sample bytes (whole frames) to float32 mono."""
    if encoding == "pcm16":
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / np.float32(32768.0)
    elif encoding == "pcm24":
        # Put each 3-byte sample in the top of an int32, then shift back: the shift keeps the sign.
        wide = np.zeros((len(raw) // 3, 4), dtype=np.uint8)
        wide[:, 1:] = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        x = (wide.view("<i4").reshape(-1) >> 8).astype(np.float32) / np.float32(1 << 23)
    elif encoding == "pcm32":
        x = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    elif encoding == "pcm8":
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - np.float32(128.0)) / np.float32(128.0)
    elif encoding == "float32":
        x = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif encoding == "float64":
        with np.errstate(over="ignore"):  # beyond float32's range gives inf, reported by the caller
            x = np.frombuffer(raw, dtype="<f8").astype(np.float32)
    elif encoding in ("alaw", "mulaw"):
        x = _g711_table(encoding)[np.frombuffer(raw, dtype=np.uint8)]
    else:  # pragma: no cover - parse_wav only lets the encodings above through
        raise AssertionError(encoding)
    return to_mono(x.reshape(-1, channels))


def to_mono(frames: np.ndarray) -> np.ndarray:
    """(n, channels) -> (n,) float32, the channels' mean (summed column by column: much faster than .mean)."""
    mono = np.array(frames[:, 0], dtype=np.float32)
    if frames.shape[1] == 1:
        return mono
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite input is reported by the caller
        for c in range(1, frames.shape[1]):
            mono += frames[:, c]
        mono *= np.float32(1.0 / frames.shape[1])
    return mono


def _read_exact(f: BinaryIO, n: int) -> bytes | None:
    data = f.read(n)
    return data if len(data) == n else None


def _parse_fmt(body: bytes) -> tuple[int, int, int, int, int]:
    """(format tag, channels, rate, block_align, bits) with WAVE_FORMAT_EXTENSIBLE resolved.

    An extensible sub-format GUID that does not carry a format tag gives tag -1.
    """
    if len(body) < 14:
        raise AudioError("corrupt WAV header (short fmt chunk)")
    tag, channels, rate, _byte_rate, block_align = struct.unpack_from("<HHIIH", body, 0)
    bits = struct.unpack_from("<H", body, 14)[0] if len(body) >= 16 else 8 * block_align // max(channels, 1)
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise AudioError("corrupt WAV header (short extensible fmt chunk)")
        guid = body[24:40]
        if guid[2:] != _GUID_TAIL:
            return -1, channels, rate, block_align, bits  # an unknown sub-format GUID
        tag = struct.unpack_from("<H", guid, 0)[0]
    return tag, channels, rate, block_align, bits


def _wav_encoding(tag: int, width: int, bits: int) -> str | None:
    """Our encoding name, or None when the codec is left to libsndfile."""
    if tag == WAVE_FORMAT_PCM and width in (1, 2, 3, 4):
        return {1: "pcm8", 2: "pcm16", 3: "pcm24", 4: "pcm32"}[width]
    if tag == WAVE_FORMAT_IEEE_FLOAT and width in (4, 8):
        return {4: "float32", 8: "float64"}[width]
    if tag == WAVE_FORMAT_ALAW and width == 1:
        return "alaw"
    if tag == WAVE_FORMAT_MULAW and width == 1:
        return "mulaw"
    return None


def parse_wav(f: BinaryIO, path: Path, file_size: int) -> WavLayout:
    head = _read_exact(f, 12)
    if head is None:
        raise AudioError("truncated WAV header")
    if head[8:12] != b"WAVE":
        raise AudioError("not a WAV file (RIFF but not WAVE)")
    container = "wav" if head[:4] == b"RIFF" else "rf64"
    ds64_data_size: int | None = None
    fmt: tuple[int, int, int, int, int] | None = None
    data: tuple[int, int] | None = None  # (offset, declared size)
    unfinalised = False
    pos = 12
    while pos + 8 <= file_size:
        f.seek(pos)
        chunk_head = _read_exact(f, 8)
        if chunk_head is None:
            break
        cid, size = chunk_head[:4], struct.unpack("<I", chunk_head[4:])[0]
        body_at = pos + 8
        if cid == b"ds64" and container == "rf64":
            body = _read_exact(f, min(size, 28))
            if body is None or len(body) < 16:
                raise AudioError("corrupt RF64 header (short ds64 chunk)")
            ds64_data_size = struct.unpack_from("<Q", body, 8)[0]
        elif cid == b"fmt ":
            body = _read_exact(f, min(size, 64))
            if body is None:
                raise AudioError("truncated WAV header")
            fmt = _parse_fmt(body)
        elif cid == b"data":
            if size == _UNSET32 and ds64_data_size is not None:
                size = ds64_data_size
            elif size in _UNFINALISED and body_at + size > file_size or (
                size == 0 and not _chunk_follows(f, body_at, file_size)
            ):
                unfinalised = True  # streamed to a pipe or recorder killed: the length was never written
                size = file_size - body_at
            data = (body_at, size)
            if fmt is not None or body_at + size > file_size:
                break
        if fmt is not None and data is not None:
            break
        pos = body_at + size + (size & 1)  # chunks are padded to an even size
    if fmt is None:
        if data is None and file_size <= 64:
            raise AudioError("truncated WAV header")
        raise AudioError("corrupt WAV header (no fmt chunk)")
    if data is None:
        raise AudioError("no audio data (header only)")

    tag, channels, rate, block_align, bits = fmt
    if channels == 0 or rate == 0 or block_align == 0:
        raise AudioError("corrupt WAV header (zero channels, rate or block size)")
    check_header_values(rate, channels)
    data_offset, declared_size = data
    available = max(0, min(declared_size, file_size - data_offset))
    width = block_align // channels if block_align % channels == 0 else 0
    encoding = _wav_encoding(tag, width, bits)
    use_soundfile = encoding is None
    if use_soundfile and tag == WAVE_FORMAT_PCM:
        encoding = f"pcm{8 * width}"
    elif use_soundfile and tag == -1:
        encoding = "extensible-guid"
    elif use_soundfile:
        encoding = _TAG_NAMES.get(tag, f"format 0x{tag:04x}").lower().replace(" ", "-")
    declared_frames = declared_size // block_align
    frames = available // block_align
    if frames == 0 and not use_soundfile:
        raise AudioError("no audio data (header only)" if declared_size == 0 else "no audio data (truncated)")
    info = AudioInfo(
        path=path, sample_rate=int(rate), channels=int(channels), frames=int(frames),
        duration_s=frames / rate, encoding=encoding, container=container,
        truncated=available < declared_size,
    )
    return WavLayout(info, data_offset, block_align, width, declared_frames, use_soundfile, unfinalised)


def check_header_values(rate: int, channels: int) -> None:
    """Refuse a sample rate or channel count no recorder writes (a corrupt or hostile header)."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"implausible sample rate in the header: {rate} Hz",
                         f"rates {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz are accepted; the header is corrupt")
    if channels > MAX_CHANNELS:
        raise AudioError(f"implausible channel count in the header: {channels}",
                         f"at most {MAX_CHANNELS} channels are accepted; the header is corrupt")


def _chunk_follows(f: BinaryIO, at: int, file_size: int) -> bool:
    """Does a plausible chunk header sit at ``at``? (Tells an empty data chunk from an unfinalised one.)"""
    if at + 8 > file_size:
        return True  # nothing after the header at all: a genuinely empty data chunk
    f.seek(at)
    head = f.read(8)
    cid, size = head[:4], struct.unpack("<I", head[4:])[0]
    return all(32 <= c < 127 for c in cid) and at + 8 + size <= file_size


_TABLES: dict[str, np.ndarray] = {}


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """Mono float samples in [-1, 1] as 16-bit PCM WAV, written to ``path.tmp`` then renamed (never half a file)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())
    tmp.replace(path)
