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
from pathlib import Path
from typing import BinaryIO, Generator

import numpy as np

from runtime.audio.resample import StreamResampler
from runtime.audio.wav import (
    AudioInfo,
    WavLayout,
    check_header_values,
    decode,
    parse_wav,
    to_mono,
)
from runtime.errors import AudioError

log = logging.getLogger(__name__)

# Largest |sample| accepted: float files may exceed full scale (1.0) a little, not by orders of magnitude.
MAX_SAMPLE_LEVEL = 1e3

# Bytes read from a WAV data chunk at a time, whatever the chunk length asked for (many channels, high rates).
MAX_READ_BYTES = 16 << 20

# Suffixes the file walkers (batch, training import) treat as audio. Lowercase, with the dot.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".rf64", ".bwf", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
     ".au", ".snd", ".caf", ".w64"}
)

FORMATS_HINT = "pip install 'fieldear[formats]'"

_SOUNDFILE_ENCODINGS = {
    "PCM_S8": "pcm8", "PCM_U8": "pcm8", "PCM_16": "pcm16", "PCM_24": "pcm24", "PCM_32": "pcm32",
    "FLOAT": "float32", "DOUBLE": "float64", "ULAW": "mulaw", "ALAW": "alaw", "VORBIS": "vorbis",
    "OPUS": "opus", "MPEG_LAYER_III": "mp3", "MPEG_LAYER_II": "mp2", "MPEG_LAYER_I": "mp1",
    "IMA_ADPCM": "ima-adpcm", "MS_ADPCM": "ms-adpcm", "GSM610": "gsm610",
}


# ---------------------------------------------------------------- G.711 tables


# ---------------------------------------------------------------- decoding


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


def _soundfile_reason(path: Path, head: bytes, layout: WavLayout | None) -> str:
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


def _soundfile_info(path: Path, head: bytes, layout: WavLayout | None) -> AudioInfo:
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
    check_header_values(rate, channels)
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
                yield to_mono(block)
    except (RuntimeError, ValueError) as exc:
        log.warning("%s: libsndfile failed while decoding: %s", path, exc)
        raise AudioError("decoding failed (libsndfile error)") from None


# ---------------------------------------------------------------- public API


def _inspect(path: Path) -> tuple[AudioInfo, WavLayout | None, bytes]:
    f = _open(path)
    try:
        size = os.fstat(f.fileno()).st_size
        head = f.read(16)
        if size == 0:
            raise AudioError("empty file (0 bytes)")
        if head[:4] in (b"RIFF", b"RF64", b"BW64"):
            f.seek(0)
            layout = parse_wav(f, path, size)
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


def _check_levels(mono: np.ndarray, frames_done: int, rate: int) -> None:
    """Refuse NaN/inf and absurd levels (float files scaled by 1e30): they would give confident nonsense."""
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(mono) <= MAX_SAMPLE_LEVEL)  # NaN compares False: caught here too
    if not bad.any():
        return
    i = int(np.argmax(bad))
    at = (frames_done + i) / rate
    if not np.isfinite(mono[i]):
        raise AudioError(f"non-finite samples (NaN/inf) at {at:.2f} s")
    raise AudioError(f"absurd sample level ({abs(float(mono[i])):.3g}) at {at:.2f} s",
                     f"float samples should lie in [-1, 1]; above {MAX_SAMPLE_LEVEL:g} the file is taken as corrupt")


def _checked(
    source: Generator[np.ndarray, None, None], info: AudioInfo, resampler: StreamResampler | None
) -> Generator[np.ndarray, None, None]:
    frames_done = 0
    try:
        for mono in source:
            _check_levels(mono, frames_done, info.sample_rate)
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


def _wav_chunks(path: Path, layout: WavLayout, frames_per_chunk: int) -> Generator[np.ndarray, None, None]:
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
            n = min(frames_per_chunk, remaining, max(1, MAX_READ_BYTES // layout.block_align))
            raw = f.read(n * layout.block_align)
            got = len(raw) // layout.block_align
            if got == 0:
                log.warning("%s: file shrank while reading; stopping %d frames early", path, remaining)
                return
            if got * layout.block_align != len(raw):
                raw = raw[: got * layout.block_align]
            remaining -= got
            yield decode(raw, info.encoding, info.channels)
    finally:
        f.close()
