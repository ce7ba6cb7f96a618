"""The one audio-file reader: predict, batch, ``listen --file`` and training import all use it.

WAV (RIFF, RF64/BW64) is parsed here with a small chunk parser and decoded with numpy, reading the
data chunk incrementally: PCM 8/16/24/32-bit, IEEE float 32/64, A-law, mu-law, WAVE_FORMAT_EXTENSIBLE.
Everything else (FLAC, OGG/Vorbis/Opus, MP3, AIFF, ADPCM or MP3 inside WAV, big-endian RIFX) goes to
``soundfile`` (libsndfile), imported only when such a file is met (extra ``fieldear[formats]``).

Samples come out as float32 mono (channels averaged), PCM scaled to [-1, 1): 16-bit / 2**15,
24-bit / 2**23, 32-bit / 2**31, 8-bit (x - 128) / 128; float files are passed through unscaled.
Files are dispatched on their first bytes, not on their suffix.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Generator

import numpy as np

from runtime.errors import AudioError
from runtime.resample import StreamResampler

log = logging.getLogger(__name__)

# Suffixes the file walkers (batch, training import) treat as audio. Lowercase, with the dot.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".rf64", ".bwf", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
     ".au", ".snd", ".caf", ".w64"}
)

FORMATS_HINT = "pip install 'fieldear[formats]'"

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
_SOUNDFILE_ENCODINGS = {
    "PCM_S8": "pcm8", "PCM_U8": "pcm8", "PCM_16": "pcm16", "PCM_24": "pcm24", "PCM_32": "pcm32",
    "FLOAT": "float32", "DOUBLE": "float64", "ULAW": "mulaw", "ALAW": "alaw", "VORBIS": "vorbis",
    "OPUS": "opus", "MPEG_LAYER_III": "mp3", "MPEG_LAYER_II": "mp2", "MPEG_LAYER_I": "mp1",
    "IMA_ADPCM": "ima-adpcm", "MS_ADPCM": "ms-adpcm", "GSM610": "gsm610",
}
_UNSET32 = 0xFFFFFFFF
_UNFINALISED = (0, 0x7FFFFFFF, 0xFFFFFFFF)  # data sizes streaming writers leave in the header


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
class _WavLayout:
    """Where and how the samples of a natively decoded WAV file are stored."""

    info: AudioInfo
    data_offset: int
    block_align: int
    sample_width: int  # bytes per sample in the container
    declared_frames: int  # what the header says (may exceed info.frames)
    soundfile: bool  # the codec is not decoded here: hand the file to libsndfile
    unfinalised: bool  # the header has no length (streamed WAV): read to the end of the file


# ---------------------------------------------------------------- G.711 tables


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


_TABLES: dict[str, np.ndarray] = {}


def _g711_table(encoding: str) -> np.ndarray:
    if encoding not in _TABLES:
        table = _alaw_table() if encoding == "alaw" else _mulaw_table()
        _TABLES[encoding] = table / np.float32(32768.0)
    return _TABLES[encoding]


# ---------------------------------------------------------------- decoding


def _decode(raw: bytes, encoding: str, channels: int) -> np.ndarray:
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
        x = np.frombuffer(raw, dtype="<f8").astype(np.float32)
    elif encoding in ("alaw", "mulaw"):
        x = _g711_table(encoding)[np.frombuffer(raw, dtype=np.uint8)]
    else:  # pragma: no cover - _parse_wav only lets the encodings above through
        raise AssertionError(encoding)
    return _to_mono(x.reshape(-1, channels))


def _to_mono(frames: np.ndarray) -> np.ndarray:
    """(n, channels) -> (n,) float32, the channels' mean (summed column by column: much faster than .mean)."""
    mono = np.array(frames[:, 0], dtype=np.float32)
    if frames.shape[1] == 1:
        return mono
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite input is reported by the caller
        for c in range(1, frames.shape[1]):
            mono += frames[:, c]
        mono *= np.float32(1.0 / frames.shape[1])
    return mono


# ---------------------------------------------------------------- opening and dispatch


def _open(path: Path) -> BinaryIO:
    if not path.exists():
        raise AudioError("file not found", "check the path")
    if path.is_dir():
        raise AudioError("is a directory, not an audio file")
    try:
        f = open(path, "rb")
    except PermissionError:
        raise AudioError("permission denied", "check the file's permissions") from None
    except OSError as exc:
        raise AudioError(f"cannot open: {exc.strerror or exc}") from None
    return f


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def _not_audio(path: Path, head: bytes) -> AudioError:
    if _looks_like_text(head[:64]):
        return AudioError("not audio (looks like a text file)")
    if path.suffix.lower() in (".wav", ".wave"):
        return AudioError("not a WAV file (no RIFF header)")
    return AudioError("not a readable audio file")


# ---------------------------------------------------------------- RIFF/WAVE parser


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


def _parse_wav(f: BinaryIO, path: Path, file_size: int) -> _WavLayout:
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
    return _WavLayout(info, data_offset, block_align, width, declared_frames, use_soundfile, unfinalised)


def _chunk_follows(f: BinaryIO, at: int, file_size: int) -> bool:
    """Does a plausible chunk header sit at ``at``? (Tells an empty data chunk from an unfinalised one.)"""
    if at + 8 > file_size:
        return True  # nothing after the header at all: a genuinely empty data chunk
    f.seek(at)
    head = f.read(8)
    cid, size = head[:4], struct.unpack("<I", head[4:])[0]
    return all(32 <= c < 127 for c in cid) and at + 8 + size <= file_size


# ---------------------------------------------------------------- soundfile (libsndfile) path


def _soundfile(reason: str):
    """Import soundfile lazily; without it, say which extra to install."""
    try:
        import soundfile
    except (ImportError, OSError):
        raise AudioError(f"{reason}: soundfile not installed", FORMATS_HINT) from None
    return soundfile


_MAGIC = (
    (b"fLaC", "FLAC"), (b"OggS", "OGG"), (b"ID3", "MP3"), (b"FORM", "AIFF"), (b"RIFX", "big-endian WAV (RIFX)"),
    (b"riff", "Wave64"), (b".snd", "AU"), (b"caff", "CAF"), (b"NIST", "NIST SPHERE"),
)
_WAV_SUFFIXES = frozenset({".wav", ".wave", ".rf64", ".bwf"})


def _soundfile_reason(path: Path, head: bytes, layout: _WavLayout | None) -> str:
    """What libsndfile is needed for (for messages), or "" when the file is not audio we know."""
    if layout is not None:
        return f"WAV encoding {layout.info.encoding}"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG frame sync
        return "MP3"
    suffix = path.suffix.lower()
    if suffix in AUDIO_EXTENSIONS and suffix not in _WAV_SUFFIXES:
        return suffix.lstrip(".").upper()
    return ""


MP3_HINT = "MP3 needs libsndfile >= 1.1: pip install -U soundfile"


def _sf_has_mp3(sf) -> bool:
    return "MP3" in sf.available_formats()


def _soundfile_info(path: Path, head: bytes, layout: _WavLayout | None) -> AudioInfo:
    reason = _soundfile_reason(path, head, layout)
    if not reason:
        raise _not_audio(path, head)
    sf = _soundfile(reason)
    try:
        with sf.SoundFile(str(path)) as snd:
            rate, channels, frames = snd.samplerate, snd.channels, snd.frames
            fmt, subtype = snd.format, snd.subtype
    except (RuntimeError, ValueError, TypeError) as exc:  # LibsndfileError is a RuntimeError
        log.debug("libsndfile cannot open %s: %s", path, exc)
        mp3_hint = MP3_HINT if "mp3" in reason.lower() and not _sf_has_mp3(sf) else None
        if layout is not None:
            raise AudioError(f"unsupported WAV encoding: {layout.info.encoding}", mp3_hint) from None
        if _looks_like_text(head):
            raise _not_audio(path, head) from None
        raise AudioError(f"corrupt or unsupported {reason} file", mp3_hint) from None
    if rate <= 0 or channels <= 0:
        raise AudioError("corrupt audio header (zero channels or rate)")
    if frames <= 0:
        raise AudioError("no audio data")
    encoding = "flac" if fmt == "FLAC" else _SOUNDFILE_ENCODINGS.get(subtype, str(subtype).lower())
    container = layout.info.container if layout is not None else str(fmt).lower()
    return AudioInfo(path, int(rate), int(channels), int(frames), frames / rate, encoding, container)


def _soundfile_chunks(path: Path, reason: str, frames_per_chunk: int) -> Generator[np.ndarray, None, None]:
    sf = _soundfile(reason)
    try:
        with sf.SoundFile(str(path)) as snd:
            while True:
                block = snd.read(frames_per_chunk, dtype="float32", always_2d=True)
                if len(block) == 0:
                    return
                yield _to_mono(block)
    except (RuntimeError, ValueError) as exc:
        log.warning("%s: libsndfile failed while decoding: %s", path, exc)
        raise AudioError("decoding failed (libsndfile error)") from None


# ---------------------------------------------------------------- public API


def _inspect(path: Path) -> tuple[AudioInfo, _WavLayout | None, bytes]:
    f = _open(path)
    try:
        size = os.fstat(f.fileno()).st_size
        head = f.read(16)
        if size == 0:
            raise AudioError("empty file (0 bytes)")
        if head[:4] in (b"RIFF", b"RF64", b"BW64"):
            f.seek(0)
            layout = _parse_wav(f, path, size)
            if not layout.soundfile:
                return layout.info, layout, head
            return _soundfile_info(path, head, layout), layout, head
        return _soundfile_info(path, head, None), None, head
    finally:
        f.close()


def probe(path: str | os.PathLike) -> AudioInfo:
    """Rate, channels, frames, duration and encoding of an audio file, from its header only."""
    return _inspect(Path(path))[0]


def iter_chunks(
    path: str | os.PathLike, target_rate: int | None = None, chunk_seconds: float = 5.0
) -> Generator[np.ndarray, None, None]:
    """Float32 mono chunks of about ``chunk_seconds`` (at the output rate), read incrementally.

    With ``target_rate`` the audio is resampled (``StreamResampler``); the concatenation of all
    chunks does not depend on ``chunk_seconds``. Memory stays bounded whatever the file's length.
    Raises AudioError before the first chunk for unreadable files, and when it meets non-finite samples.
    """
    if chunk_seconds <= 0:
        raise ValueError("chunk_seconds must be > 0")
    if target_rate is not None and int(target_rate) <= 0:
        raise ValueError("target_rate must be > 0")
    path = Path(path)
    info, layout, head = _inspect(path)  # bad files fail here, at the call, not at the first next()
    frames_per_chunk = max(1, int(round(chunk_seconds * info.sample_rate)))
    if layout is not None and not layout.soundfile:
        source = _wav_chunks(path, layout, frames_per_chunk)
    else:
        source = _soundfile_chunks(path, _soundfile_reason(path, head, layout), frames_per_chunk)
    resampler = None
    if target_rate is not None and int(target_rate) != info.sample_rate:
        resampler = StreamResampler(info.sample_rate, int(target_rate))
    return _checked(source, info, resampler)


def _checked(
    source: Generator[np.ndarray, None, None], info: AudioInfo, resampler: StreamResampler | None
) -> Generator[np.ndarray, None, None]:
    frames_done = 0
    try:
        for mono in source:
            finite = np.isfinite(mono)
            if not finite.all():
                at = (frames_done + int(np.argmin(finite))) / info.sample_rate
                raise AudioError(f"non-finite samples (NaN/inf) at {at:.2f} s")
            frames_done += len(mono)
            out = resampler.push(mono) if resampler is not None else mono
            if len(out):
                yield out
        if resampler is not None:
            tail = resampler.flush()
            if len(tail):
                yield tail
    finally:
        source.close()  # closes the file now, also when the consumer stops early


def _wav_chunks(path: Path, layout: _WavLayout, frames_per_chunk: int) -> Generator[np.ndarray, None, None]:
    info = layout.info
    if layout.unfinalised:
        log.info("%s: no length in the WAV header (streamed file); reading to the end", path)
    if info.truncated:
        log.warning(
            "%s: truncated: header says %.2f s, file holds %.2f s; reading what is there",
            path, layout.declared_frames / info.sample_rate, info.duration_s,
        )
    f = _open(path)
    try:
        f.seek(layout.data_offset)
        remaining = info.frames
        while remaining > 0:
            n = min(frames_per_chunk, remaining)
            raw = f.read(n * layout.block_align)
            got = len(raw) // layout.block_align
            if got == 0:
                log.warning("%s: file shrank while reading; stopping %d frames early", path, remaining)
                return
            if got * layout.block_align != len(raw):
                raw = raw[: got * layout.block_align]
            remaining -= got
            yield _decode(raw, info.encoding, info.channels)
    finally:
        f.close()


def read_audio(
    path: str | os.PathLike, target_rate: int | None = None, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """The whole file (or its first ``max_seconds``) as float32 mono, and its rate (target_rate if given)."""
    path = Path(path)
    rate = int(target_rate) if target_rate is not None else probe(path).sample_rate
    limit = None if max_seconds is None else max(0, int(round(max_seconds * rate)))
    parts: list[np.ndarray] = []
    n = 0
    chunks = iter_chunks(path, target_rate=target_rate)
    try:
        for chunk in chunks:
            parts.append(chunk)
            n += len(chunk)
            if limit is not None and n >= limit:
                break
    finally:
        chunks.close()
    x = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    if limit is not None:
        x = x[:limit]
    return x, rate
