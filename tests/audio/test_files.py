"""runtime/audio.py: every WAV encoding from a real ESC-10 clip, other containers, bad input, streaming."""

from __future__ import annotations

import io
import logging
import struct
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile

from runtime.audio import files as audio
from runtime.audio import wav
from runtime.audio.resample import resample
from runtime.errors import AudioError

RATE = 16000
KSDATAFORMAT_TAIL = bytes.fromhex("000000001000800000aa00389b71")


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def clip(esc10) -> np.ndarray:
    """A real 5 s ESC-10 dog clip, 16 kHz, float32 in [-1, 1), read with scipy (not the code under test)."""
    path = sorted((esc10 / "dog").glob("*.wav"))[0]
    rate, ints = scipy.io.wavfile.read(path)
    assert rate == RATE and ints.dtype == np.int16
    return ints.astype(np.float32) / 32768.0


def encode(x: np.ndarray, encoding: str) -> bytes:
    """Float samples (frames, channels) to little-endian WAV sample bytes."""
    x = np.asarray(x, dtype=np.float64)
    if encoding == "pcm8":
        return (np.clip(np.round(x * 128), -128, 127) + 128).astype(np.uint8).tobytes()
    if encoding == "pcm16":
        return np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()
    if encoding == "pcm24":
        ints = np.clip(np.round(x * 2**23), -(2**23), 2**23 - 1).astype("<i4").reshape(-1)
        return np.frombuffer(ints.tobytes(), np.uint8).reshape(-1, 4)[:, :3].tobytes()
    if encoding == "pcm32":
        return np.clip(np.round(x * 2**31), -(2**31), 2**31 - 1).astype("<i4").tobytes()
    if encoding == "float32":
        return x.astype("<f4").tobytes()
    if encoding == "float64":
        return x.astype("<f8").tobytes()
    raise ValueError(encoding)


WIDTH = {"pcm8": 1, "pcm16": 2, "pcm24": 3, "pcm32": 4, "float32": 4, "float64": 8}
TAG = {"pcm8": 1, "pcm16": 1, "pcm24": 1, "pcm32": 1, "float32": 3, "float64": 3}


def chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def fmt_body(tag: int, channels: int, rate: int, width: int, extensible: bool = False) -> bytes:
    block = channels * width
    if not extensible:
        return struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, 8 * width)
    guid = struct.pack("<H", tag) + KSDATAFORMAT_TAIL
    return struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, 8 * width,
                       22, 8 * width, (1 << channels) - 1) + guid


def write_wav(path: Path, x: np.ndarray, rate: int, encoding: str = "pcm16", *, extensible: bool = False,
              before: bytes = b"", after: bytes = b"", data_size: int | None = None) -> Path:
    """A WAV written by hand: ``before``/``after`` are extra raw chunks around the data chunk."""
    x = np.asarray(x)
    frames = x.reshape(len(x), -1)
    data = encode(frames, encoding)
    size = len(data) if data_size is None else data_size
    body = (b"WAVE" + chunk(b"fmt ", fmt_body(TAG[encoding], frames.shape[1], rate, WIDTH[encoding], extensible))
            + before + b"data" + struct.pack("<I", size) + data + (b"\0" if len(data) % 2 else b"") + after)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    assert len(excinfo.value.message) <= 60, excinfo.value.message
    return text


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    err = np.sum((ref.astype(np.float64) - got) ** 2)
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(err, 1e-30)))


# ---------------------------------------------------------------- WAV encodings decoded here


TOLERANCE = {"pcm8": 0.5 / 128 + 1e-6, "pcm16": 0.5 / 32768 + 1e-7, "pcm24": 1e-6, "pcm32": 1e-6,
             "float32": 0.0, "float64": 1e-7}


@pytest.mark.runtime
@pytest.mark.parametrize("encoding", sorted(TOLERANCE))
def test_pcm_and_float_wav_decode_to_original(tmp_path, clip, encoding):
    path = write_wav(tmp_path / f"{encoding}.wav", clip, RATE, encoding)
    info = audio.probe(path)
    assert (info.sample_rate, info.channels, info.frames, info.encoding) == (RATE, 1, len(clip), encoding)
    assert info.duration_s == pytest.approx(len(clip) / RATE)
    x, rate = audio.read_audio(path)
    assert rate == RATE and x.dtype == np.float32 and x.shape == clip.shape
    assert np.max(np.abs(x - clip)) <= TOLERANCE[encoding]
    if encoding == "pcm8":
        assert snr_db(clip, x) > 15  # 8-bit of a quiet-ish clip
    else:
        assert snr_db(clip, x) > 80


@pytest.mark.runtime
def test_pcm_scaling_full_scale_values(tmp_path):
    ints = np.array([-32768, -16384, 0, 16384, 32767], dtype="<i2")
    path = tmp_path / "scale.wav"
    body = b"WAVE" + chunk(b"fmt ", fmt_body(1, 1, 8000, 2)) + chunk(b"data", ints.tobytes())
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    x, _ = audio.read_audio(path)
    np.testing.assert_array_equal(x, np.array([-1.0, -0.5, 0.0, 0.5, 32767 / 32768], np.float32))
    u8 = np.array([0, 64, 128, 255], np.uint8)
    body = b"WAVE" + chunk(b"fmt ", fmt_body(1, 1, 8000, 1)) + chunk(b"data", u8.tobytes())
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    x, _ = audio.read_audio(path)
    np.testing.assert_array_equal(x, np.array([-1.0, -0.5, 0.0, 127 / 128], np.float32))


@pytest.mark.runtime
def test_g711_tables_match_audioop_and_g711_values():
    alaw = wav._g711_table("alaw") * 32768
    mulaw = wav._g711_table("mulaw") * 32768
    # G.711 reference points: A-law 0xD5/0x55 are +-8, mu-law 0xFF/0x7F are 0, 0x80/0x00 are +-32124.
    assert (alaw[0xD5], alaw[0x55], alaw[0xAA], alaw[0x2A]) == (8, -8, 32256, -32256)
    assert (mulaw[0xFF], mulaw[0x7F], mulaw[0x80], mulaw[0x00]) == (0, 0, 32124, -32124)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # gone in Python 3.13; the values above still check
    codes = bytes(range(256))
    np.testing.assert_array_equal(alaw, np.frombuffer(audioop.alaw2lin(codes, 2), "<i2"))
    np.testing.assert_array_equal(mulaw, np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2"))


@pytest.mark.parametrize("subtype, encoding", [("ALAW", "alaw"), ("ULAW", "mulaw")])
def test_alaw_mulaw_wav_from_libsndfile(tmp_path, clip, subtype, encoding):
    import soundfile

    path = tmp_path / f"{encoding}.wav"
    soundfile.write(path, clip, RATE, subtype=subtype)
    info = audio.probe(path)
    assert (info.encoding, info.frames, info.sample_rate) == (encoding, len(clip), RATE)
    x, _ = audio.read_audio(path)
    reference, _ = soundfile.read(path, dtype="float32")
    np.testing.assert_array_equal(x, reference)  # same tables as libsndfile
    assert snr_db(clip, x) > 25  # 8-bit companded


@pytest.mark.runtime
def test_stereo_is_averaged_to_mono(tmp_path, clip):
    right = 0.5 * clip[::-1]
    path = write_wav(tmp_path / "stereo.wav", np.stack([clip, right], axis=1), RATE, "float32")
    info = audio.probe(path)
    assert info.channels == 2 and info.frames == len(clip)
    x, _ = audio.read_audio(path)
    np.testing.assert_allclose(x, (clip + right) / 2, atol=1e-7)


@pytest.mark.runtime
@pytest.mark.parametrize("encoding", ["pcm24", "float32", "pcm16"])
def test_wave_format_extensible(tmp_path, clip, encoding):
    frames = np.stack([clip, clip], axis=1)
    path = write_wav(tmp_path / "ext.wav", frames, RATE, encoding, extensible=True)
    info = audio.probe(path)
    assert (info.encoding, info.channels, info.frames) == (encoding, 2, len(clip))
    x, _ = audio.read_audio(path)
    assert np.max(np.abs(x - clip)) <= TOLERANCE[encoding] + 1e-7


@pytest.mark.runtime
def test_unknown_extensible_subformat_is_an_error(tmp_path, clip):
    path = write_wav(tmp_path / "ext.wav", clip, RATE, "pcm16", extensible=True)
    raw = bytearray(path.read_bytes())
    at = raw.index(KSDATAFORMAT_TAIL)
    raw[at:at + 4] = b"\x12\x34\x56\x78"  # an ambisonic-like GUID nobody decodes
    path.write_bytes(bytes(raw))
    with pytest.raises(AudioError) as excinfo:
        audio.read_audio(path)
    one_line_error(excinfo)


@pytest.mark.runtime
def test_unknown_and_odd_sized_chunks_are_skipped(tmp_path, clip):
    before = (chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00test\x00") + chunk(b"JUNK", b"1234567")  # odd: padded
              + chunk(b"fact", struct.pack("<I", len(clip))) + chunk(b"bext", bytes(603)))
    after = chunk(b"LIST", b"INFOICMT\x03\x00\x00\x00ab\x00")
    path = write_wav(tmp_path / "chunks.wav", clip, RATE, "pcm16", before=before, after=after)
    info = audio.probe(path)
    assert info.frames == len(clip)
    x, _ = audio.read_audio(path)
    assert np.max(np.abs(x - clip)) <= TOLERANCE["pcm16"]


@pytest.mark.runtime
def test_fmt_after_data_chunk(tmp_path, clip):
    data = encode(clip[:, None], "pcm16")
    body = b"WAVE" + chunk(b"data", data) + chunk(b"fmt ", fmt_body(1, 1, RATE, 2))
    path = tmp_path / "late_fmt.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    x, _ = audio.read_audio(path)
    assert len(x) == len(clip) and np.max(np.abs(x - clip)) <= TOLERANCE["pcm16"]


@pytest.mark.runtime
def test_rf64(tmp_path, clip):
    data = encode(clip[:, None], "float32")
    ds64 = struct.pack("<QQQI", 0, len(data), len(clip), 0)
    body = (b"WAVE" + chunk(b"ds64", ds64) + chunk(b"fmt ", fmt_body(3, 1, RATE, 4))
            + b"data" + struct.pack("<I", 0xFFFFFFFF) + data)
    path = tmp_path / "big.wav"
    path.write_bytes(b"RF64" + struct.pack("<I", 0xFFFFFFFF) + body)
    info = audio.probe(path)
    assert (info.container, info.frames, info.truncated) == ("rf64", len(clip), False)
    x, _ = audio.read_audio(path)
    np.testing.assert_array_equal(x, clip)


@pytest.mark.runtime
@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_streamed_wav_without_length_is_read_to_the_end(tmp_path, clip, size):
    path = write_wav(tmp_path / "streamed.wav", clip, RATE, "pcm16", data_size=size)
    info = audio.probe(path)
    assert info.frames == len(clip) and not info.truncated
    assert len(audio.read_audio(path)[0]) == len(clip)


# ---------------------------------------------------------------- sample rates and resampling


@pytest.mark.runtime
@pytest.mark.parametrize("rate", [8000, 11127, 44100, 48000, 192000])
def test_rates_and_resampling_back(tmp_path, clip, rate):
    written = np.clip(resample(clip, RATE, rate), -1, 1 - 2**-15)
    path = write_wav(tmp_path / f"r{rate}.wav", written, rate, "pcm16")
    assert audio.probe(path).sample_rate == rate
    native, got_rate = audio.read_audio(path)
    assert got_rate == rate and np.max(np.abs(native - written)) <= TOLERANCE["pcm16"]
    back, got_rate = audio.read_audio(path, target_rate=RATE)
    assert got_rate == RATE and abs(len(back) - len(clip)) <= 2  # ceil() on each way
    n = min(len(back), len(clip))
    if rate >= RATE:  # nothing of the clip was lost: it comes back
        assert np.corrcoef(back[:n], clip[:n])[0, 1] > 0.99
    else:  # band-limited to the lower rate: compare with the same round trip done in memory
        expected = resample(resample(clip, RATE, rate), rate, RATE)
        assert snr_db(expected[:n], back[:n]) > 60


@pytest.mark.runtime
@pytest.mark.parametrize("target_rate", [None, 44100, 11025])
def test_chunk_size_does_not_change_the_output(tmp_path, clip, target_rate):
    path = write_wav(tmp_path / "c.wav", np.stack([clip, -clip[::-1]], axis=1), RATE, "pcm24")
    outputs = []
    for seconds in (0.013, 0.37, 1.0, 5.0, 60.0):
        chunks = list(audio.iter_chunks(path, target_rate=target_rate, chunk_seconds=seconds))
        assert all(c.dtype == np.float32 and c.ndim == 1 and len(c) for c in chunks)
        outputs.append(np.concatenate(chunks))
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])
    whole, _ = audio.read_audio(path, target_rate=target_rate)
    np.testing.assert_array_equal(whole, outputs[0])


@pytest.mark.runtime
def test_read_audio_max_seconds_is_a_prefix(tmp_path, clip):
    path = write_wav(tmp_path / "m.wav", clip, RATE, "pcm16")
    full, _ = audio.read_audio(path, target_rate=44100)
    head, rate = audio.read_audio(path, target_rate=44100, max_seconds=1.5)
    assert rate == 44100 and len(head) == 66150
    np.testing.assert_array_equal(head, full[:66150])
    head, rate = audio.read_audio(path, max_seconds=100)
    assert rate == RATE and len(head) == len(clip)


@pytest.mark.runtime
def test_two_hour_wav_is_streamed_in_bounded_memory(tmp_path, clip):
    """A sparse 2 h 16 kHz file (the real clip at both ends, silence between) never held whole."""
    frames = 2 * 3600 * RATE
    path = tmp_path / "two_hours.wav"
    pcm = encode(clip[:, None], "pcm16")
    data_size = 2 * frames
    header = b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE" + chunk(b"fmt ", fmt_body(1, 1, RATE, 2))
    header += b"data" + struct.pack("<I", data_size)
    with open(path, "wb") as f:
        f.write(header + pcm)
        f.seek(len(header) + data_size - len(pcm))
        f.write(pcm)
    assert audio.probe(path).duration_s == 7200.0

    start = time.monotonic()
    tracemalloc.start()
    try:
        n, first, last = 0, None, None
        for c in audio.iter_chunks(path, chunk_seconds=10.0):
            if first is None:
                first = c
            n += len(c)
            last = c
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    logging.getLogger(__name__).info("2 h WAV: %.1f s, peak traced %.1f MB", time.monotonic() - start, peak / 1e6)
    assert n == frames
    assert peak < 50e6
    assert np.max(np.abs(first[: len(clip)] - clip)) <= TOLERANCE["pcm16"]
    assert np.max(np.abs(last[-len(clip):] - clip)) <= TOLERANCE["pcm16"]


# ---------------------------------------------------------------- other containers (libsndfile)


@pytest.mark.parametrize("fmt, suffix, encoding, min_corr", [
    ("FLAC", ".flac", "flac", 0.99999), ("OGG", ".ogg", "vorbis", 0.98), ("MP3", ".mp3", "mp3", 0.99),
    ("AIFF", ".aiff", "pcm16", 0.99999), ("AU", ".au", "pcm16", 0.99999),
])
def test_soundfile_containers(tmp_path, clip, fmt, suffix, encoding, min_corr):
    import soundfile

    path = tmp_path / f"x{suffix}"
    soundfile.write(path, np.stack([clip, clip], axis=1), RATE, format=fmt)
    info = audio.probe(path)
    assert (info.encoding, info.channels, info.sample_rate) == (encoding, 2, RATE)
    assert suffix in audio.AUDIO_EXTENSIONS
    x, _ = audio.read_audio(path)
    n = min(len(x), len(clip))
    assert abs(len(x) - len(clip)) < RATE // 10
    assert np.corrcoef(x[:n], clip[:n])[0, 1] > min_corr
    chunked = np.concatenate(list(audio.iter_chunks(path, chunk_seconds=0.3)))
    if fmt == "MP3":
        # libsndfile 1.2's MP3 decoder (libmpg123) glitches when a read ends at some frames
        # ("part2_3_length too large"), so chunked output can differ from a whole read a little.
        assert np.corrcoef(chunked[:n], clip[:n])[0, 1] > min_corr
    else:
        np.testing.assert_array_equal(chunked, x)


@pytest.mark.parametrize("subtype, encoding", [("IMA_ADPCM", "ima-adpcm"), ("MS_ADPCM", "ms-adpcm"),
                                                ("GSM610", "gsm610")])
def test_other_wav_codecs_go_through_libsndfile(tmp_path, clip, subtype, encoding):
    import soundfile

    path = tmp_path / f"{encoding}.wav"
    soundfile.write(path, clip, RATE, subtype=subtype)
    info = audio.probe(path)
    assert (info.encoding, info.container, info.sample_rate) == (encoding, "wav", RATE)
    x, _ = audio.read_audio(path)
    n = min(len(x), len(clip))
    assert np.corrcoef(x[:n], clip[:n])[0, 1] > 0.95


def test_files_are_dispatched_on_content_not_suffix(tmp_path, clip):
    import soundfile

    flac_named_wav = tmp_path / "really_flac.wav"
    soundfile.write(flac_named_wav, clip, RATE, format="FLAC")
    assert audio.probe(flac_named_wav).encoding == "flac"
    assert np.max(np.abs(audio.read_audio(flac_named_wav)[0] - clip)) <= TOLERANCE["pcm16"]
    wav_named_flac = write_wav(tmp_path / "really_wav.flac", clip, RATE, "pcm24")
    assert audio.probe(wav_named_flac).encoding == "pcm24"
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError) as excinfo:
        audio.read_audio(garbage)
    assert "corrupt or unsupported" in one_line_error(excinfo)


def test_big_endian_rifx_goes_through_libsndfile(tmp_path, clip):
    import soundfile

    path = tmp_path / "rifx.wav"
    soundfile.write(path, clip, RATE, format="WAV", subtype="PCM_24", endian="BIG")
    assert path.read_bytes()[:4] == b"RIFX"
    info = audio.probe(path)
    assert (info.encoding, info.frames) == ("pcm24", len(clip))
    assert np.max(np.abs(audio.read_audio(path)[0] - clip)) <= TOLERANCE["pcm24"]


def test_mp3_inside_wav(tmp_path, clip):
    import soundfile

    mp3 = io.BytesIO()
    soundfile.write(mp3, clip, RATE, format="MP3")
    fmt = struct.pack("<HHIIHHH", 0x55, 1, RATE, 4000, 1, 0, 12) + struct.pack("<HIHHH", 1, 2, 144, 1, 1393)
    body = b"WAVE" + chunk(b"fmt ", fmt) + chunk(b"fact", struct.pack("<I", len(clip))) + chunk(b"data", mp3.getvalue())
    path = tmp_path / "mp3.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    info = audio.probe(path)
    assert (info.encoding, info.container, info.sample_rate) == ("mp3", "wav", RATE)
    x, _ = audio.read_audio(path)
    n = min(len(x), len(clip))
    assert np.corrcoef(x[:n], clip[:n])[0, 1] > 0.99


def test_mp3_error_hints_at_libsndfile_version(tmp_path, monkeypatch):
    import soundfile

    path = tmp_path / "broken.mp3"
    path.write_bytes(b"ID3" + bytes(300))
    with pytest.raises(AudioError) as excinfo:
        audio.probe(path)
    assert "MP3" in one_line_error(excinfo) and excinfo.value.hint is None  # this libsndfile has MP3
    monkeypatch.setattr(soundfile, "available_formats", lambda: {"WAV": "WAV (Microsoft)"})  # an old libsndfile
    with pytest.raises(AudioError) as excinfo:
        audio.probe(path)
    assert excinfo.value.hint == audio.MP3_HINT


@pytest.mark.runtime
def test_without_soundfile_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "soundfile", None)  # import soundfile -> ImportError
    path = tmp_path / "x.flac"
    path.write_bytes(b"fLaC" + bytes(100))
    with pytest.raises(AudioError) as excinfo:
        audio.probe(path)
    one_line_error(excinfo)
    assert "FLAC" in excinfo.value.message and excinfo.value.hint == audio.FORMATS_HINT
    mp3_in_wav = tmp_path / "mp3.wav"
    fmt = struct.pack("<HHIIHHH", 0x55, 1, RATE, 4000, 1, 0, 0)
    body = b"WAVE" + chunk(b"fmt ", fmt) + chunk(b"data", b"\xff\xf3" + bytes(500))
    mp3_in_wav.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(AudioError) as excinfo:
        audio.read_audio(mp3_in_wav)
    assert "mp3" in excinfo.value.message and excinfo.value.hint == audio.FORMATS_HINT


# ---------------------------------------------------------------- bad input


def _bad_files(tmp_path: Path, clip: np.ndarray) -> dict[str, Path]:
    good = write_wav(tmp_path / "good.wav", clip, RATE, "pcm16").read_bytes()
    header_len = good.index(b"data") + 8
    files = {
        "missing": tmp_path / "missing.wav",
        "zero_byte": tmp_path / "empty.wav",
        "header_only": tmp_path / "header.wav",
        "cut_header": tmp_path / "cut_header.wav",
        "no_data_after_header": tmp_path / "nodata.wav",
        "random_bytes": tmp_path / "random.wav",
        "text": tmp_path / "notes.wav",
        "riff_not_wave": tmp_path / "avi.wav",
    }
    files["zero_byte"].write_bytes(b"")
    files["header_only"].write_bytes(good[: header_len - 8])  # RIFF + fmt, no data chunk
    files["cut_header"].write_bytes(good[:20])
    files["no_data_after_header"].write_bytes(good[:header_len])  # data chunk claims 160 kB, holds 0
    files["random_bytes"].write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    files["text"].write_text("recorded at the pond, 5 May\nsee notes.txt\n")
    files["riff_not_wave"].write_bytes(b"RIFF" + struct.pack("<I", 100) + b"AVI " + bytes(100))
    (tmp_path / "x.wav").mkdir()
    files["directory"] = tmp_path / "x.wav"
    return files


BAD = ["missing", "zero_byte", "header_only", "cut_header", "no_data_after_header", "random_bytes", "text",
       "riff_not_wave", "directory"]


@pytest.mark.runtime
@pytest.mark.parametrize("case", BAD)
def test_bad_files_raise_a_short_audio_error(tmp_path, clip, case):
    path = _bad_files(tmp_path, clip)[case]
    for call in (audio.probe, audio.read_audio, audio.iter_chunks):  # iter_chunks fails at the call
        with pytest.raises(AudioError) as excinfo:
            call(path)
        one_line_error(excinfo)


@pytest.mark.runtime
def test_bad_file_messages_say_what_is_wrong(tmp_path, clip):
    files = _bad_files(tmp_path, clip)
    expected = {"missing": "not found", "zero_byte": "empty", "header_only": "no audio data",
                "no_data_after_header": "no audio data", "random_bytes": "not a WAV file", "text": "text",
                "directory": "directory", "cut_header": "truncated"}
    for case, words in expected.items():
        with pytest.raises(AudioError) as excinfo:
            audio.probe(files[case])
        assert words in excinfo.value.message, (case, excinfo.value.message)


@pytest.mark.runtime
@pytest.mark.parametrize("encoding", ["pcm16", "pcm24"])
def test_truncated_data_reads_what_is_there_with_a_warning(tmp_path, clip, caplog, encoding):
    path = write_wav(tmp_path / "cut.wav", clip, RATE, encoding)
    raw = path.read_bytes()
    data_at = raw.index(b"data") + 8
    keep = 40000
    path.write_bytes(raw[: data_at + keep * WIDTH[encoding] + 1])  # cut mid-frame
    info = audio.probe(path)
    assert info.truncated and info.frames == keep
    with caplog.at_level(logging.WARNING, logger="runtime.audio.files"):
        x, _ = audio.read_audio(path)
    assert any("truncated" in r.getMessage() for r in caplog.records)
    assert len(x) == keep
    assert np.max(np.abs(x - clip[:keep])) <= TOLERANCE[encoding]


@pytest.mark.runtime
@pytest.mark.parametrize("encoding, bad", [("float32", np.nan), ("float64", np.inf), ("float32", -np.inf)])
def test_non_finite_samples_raise_when_met(tmp_path, clip, encoding, bad):
    x = clip.astype(np.float64)
    x[3 * RATE + 5] = bad
    path = write_wav(tmp_path / "nan.wav", x, RATE, encoding)
    chunks = audio.iter_chunks(path, chunk_seconds=1.0)
    got = [next(chunks) for _ in range(3)]  # the first 3 s are fine
    np.testing.assert_allclose(np.concatenate(got), clip[: 3 * RATE], atol=1e-7)
    with pytest.raises(AudioError) as excinfo:
        next(chunks)
    assert "non-finite" in one_line_error(excinfo) and "3.00 s" in excinfo.value.message
    with pytest.raises(AudioError):
        audio.read_audio(path, target_rate=44100)


# ---------------------------------------------------------------- hostile headers (issue 17, item 1)


def _with_header(tmp_path: Path, clip: np.ndarray, name: str, rate: int, channels: int = 1) -> Path:
    """The real clip as 16-bit mono, then the fmt chunk's rate and channel count overwritten (block size kept)."""
    raw = bytearray(write_wav(tmp_path / "real.wav", clip, RATE, "pcm16").read_bytes())
    fmt_at = raw.index(b"fmt ") + 8
    struct.pack_into("<HI", raw, fmt_at + 2, channels, rate)
    path = tmp_path / name
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.runtime
@pytest.mark.parametrize("rate", [1, 999, 768_001, 1_000_003, 1_342_193_280])
def test_implausible_header_rate_is_refused_at_once(tmp_path, clip, rate):
    path = _with_header(tmp_path, clip, "rate.wav", rate)
    t0 = time.perf_counter()
    for call in (audio.probe, audio.read_audio, audio.iter_chunks):
        with pytest.raises(AudioError) as excinfo:
            call(path)
        assert "sample rate" in one_line_error(excinfo) and excinfo.value.hint
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.runtime
def test_implausible_channel_count_is_refused(tmp_path, clip):
    path = _with_header(tmp_path, clip, "channels.wav", RATE, channels=wav.MAX_CHANNELS + 1)
    with pytest.raises(AudioError) as excinfo:
        audio.probe(path)
    assert "channel" in one_line_error(excinfo)


@pytest.mark.runtime
def test_resampling_ratio_with_a_huge_filter_is_refused_in_bounded_memory(tmp_path, clip):
    path = _with_header(tmp_path, clip, "odd_rate.wav", 767_999)  # plausible, but coprime with 16 kHz
    assert audio.probe(path).sample_rate == 767_999
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(AudioError) as excinfo:
            audio.read_audio(path, target_rate=RATE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "resample" in one_line_error(excinfo) and excinfo.value.hint
    assert peak < 20e6 and time.perf_counter() - t0 < 2.0


@pytest.mark.runtime
def test_odd_but_usable_rate_still_resamples(tmp_path, clip):
    path = _with_header(tmp_path, clip, "44101.wav", 44_101)  # a calibrated sound card's rate: 2.8 M taps
    x, rate = audio.read_audio(path, target_rate=RATE)
    assert rate == RATE and abs(len(x) - round(len(clip) * RATE / 44_101)) <= 1


@pytest.mark.runtime
@pytest.mark.parametrize("encoding, scale, words", [("float32", 1e30, "absurd sample level"),
                                                    ("float64", 1e30, "absurd sample level"),
                                                    ("float32", 2e4, "absurd sample level"),
                                                    ("float64", 1e300, "non-finite")])  # beyond float32: inf
def test_absurd_float_levels_are_refused_like_nan(tmp_path, clip, encoding, scale, words):
    path = write_wav(tmp_path / "loud.wav", clip.astype(np.float64) * scale, RATE, encoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warnings on the way
        with pytest.raises(AudioError) as excinfo:
            audio.read_audio(path)
    assert words in one_line_error(excinfo)


@pytest.mark.runtime
def test_float_levels_a_little_over_full_scale_are_kept(tmp_path, clip):
    path = write_wav(tmp_path / "hot.wav", clip.astype(np.float64) * 4.0, RATE, "float32")
    x, _ = audio.read_audio(path)
    np.testing.assert_allclose(x, clip * 4.0, rtol=1e-6)
