"""fieldear predict: clip prediction on real audio, odd-but-valid files, broken files, broken bundles.

Helpers here (``model_dir``, ``write_wav``, ``real_clip``) are also used by test_batch*/test_evaluate*.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import AudioError, BundleError
from runtime.model.bundle import MODEL_JSON, load_bundle
from runtime.paths import DEFAULT_BUNDLE

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]


def model_dir() -> Path:
    """The committed default bundle (FIELDEAR_TEST_BUNDLE overrides it, for work on another model)."""
    path = Path(os.environ.get("FIELDEAR_TEST_BUNDLE") or DEFAULT_BUNDLE)
    if not (path / MODEL_JSON).is_file():
        pytest.fail(f"model bundle missing: {path} (the default model is committed under runtime/models/default)")
    return path


@pytest.fixture(scope="module")
def model():
    from runtime.model.model import Model

    return Model.load(model_dir(), threads=1)


def real_clip(esc10, cls: str = "dog", index: int = 0) -> Path:
    return sorted((esc10 / cls).glob("*.wav"))[index]


def read_pcm16(path: Path) -> tuple[np.ndarray, int]:
    """A plain 16-bit mono WAV from the shared data, with the standard library only."""
    import wave

    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    return x, rate


def _alaw_encode(x: np.ndarray) -> np.ndarray:
    """G.711 A-law encoder (float in [-1, 1) -> bytes), the inverse of the usual decode table."""
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int32) >> 3  # 13-bit
    sign = np.where(pcm >= 0, 0x80, 0x00)
    mag = np.minimum(np.abs(pcm), 0xFFF)
    seg = np.zeros_like(mag)
    for s in range(1, 8):
        seg = np.where(mag >= (0x20 << (s - 1)), s, seg)
    mant = np.where(seg == 0, mag >> 1, mag >> np.maximum(seg, 1)) & 0x0F
    return ((sign | (seg << 4) | mant) ^ 0x55).astype(np.uint8)


def write_wav(path: Path, x: np.ndarray, rate: int, encoding: str = "pcm16") -> Path:
    """WAV writer by hand (no soundfile in the device venv). x: (n,) or (n, channels) floats."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    channels = x.shape[1]
    if encoding == "pcm16":
        tag, width, data = 1, 2, np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()
    elif encoding == "pcm24":
        ints = np.clip(np.round(x * 8388608), -8388608, 8388607).astype("<i4")
        data = ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
        tag, width = 1, 3
    elif encoding == "float32":
        tag, width, data = 3, 4, x.astype("<f4").tobytes()
    elif encoding == "alaw":
        tag, width, data = 6, 1, _alaw_encode(x.reshape(-1)).tobytes()
    else:
        raise ValueError(encoding)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * width, channels * width, 8 * width)
    if tag != 1:
        fmt += struct.pack("<H", 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    if len(data) % 2:
        body += b"\0"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def expected_blocks(seconds: float, params) -> int:
    n_frames = 1 + int(round(seconds * params.sample_rate)) // params.hop
    if n_frames < params.block_frames:
        return 1
    return 1 + (n_frames - params.block_frames) // params.block_hop


# ---------------------------------------------------------------- real clips


def test_predict_real_clip_matches_manual_chain(model, esc10):
    """Model + streaming predict == whole clip -> blocks -> each stage's Runner by hand -> mean."""
    from runtime.features.pipeline import blocks_of, stack
    from runtime.model.interpreter import Runner
    from runtime.predict.predict import predict_file

    path = real_clip(esc10, "rooster", 3)
    pred = predict_file(model, path, keep_blocks=True)
    x, rate = read_pcm16(path)
    blocks = stack(blocks_of(x, rate, model.params), model.params)
    runners = [Runner(model.bundle.stage_path(s), threads=1) for s in model.bundle.stages]
    manual = []
    for b in blocks:
        y = b
        for r in runners:
            y = r.run_one(y)
        manual.append(y)
    manual = np.stack(manual)
    np.testing.assert_array_equal(pred.block_scores, manual)
    pooled = manual.max(axis=0) if model.bundle.clip_pooling == "max" else manual.mean(axis=0)
    np.testing.assert_allclose(pred.scores, pooled, rtol=0, atol=1e-7)
    assert pred.n_blocks == len(blocks) == expected_blocks(len(x) / rate, model.params)
    assert pred.duration_s == pytest.approx(len(x) / rate)
    assert pred.sample_rate == rate
    assert pred.label == model.labels[int(np.argmax(manual.mean(axis=0) if model.bundle.clip_pooling == "mean" else manual.max(axis=0)))]


def test_chunk_size_does_not_change_scores(model, esc10):
    from runtime.predict.predict import predict_file

    path = real_clip(esc10, "helicopter", 1)
    a = predict_file(model, path, keep_blocks=True, chunk_seconds=10.0)
    b = predict_file(model, path, keep_blocks=True, chunk_seconds=0.173)
    # features agree to ~1e-7 (float32 sums in another order); that can move an int8 input by one step now
    # and then, which moves a score by at most a few output quantization steps
    step = model.runners[-1].output_spec["scale"] or 1e-6
    assert a.block_scores.shape == b.block_scores.shape
    assert np.abs(a.block_scores - b.block_scores).max() <= 3 * step


def test_default_model_recognises_real_clips(esc10):
    """The committed default model gets most of a held-out-agnostic sample of ESC-10 right."""
    from runtime.model.model import Model
    from runtime.predict.predict import predict_file

    m = Model.load(model_dir(), threads=1)
    classes = [c for c in m.labels if (esc10 / c).is_dir()]
    if len(classes) < 5:
        pytest.fail(f"the test model's labels {m.labels} are not ESC-10 classes")
    right = sum(predict_file(m, real_clip(esc10, c, -1)).label == c for c in classes)
    assert right >= 0.6 * len(classes), f"{right}/{len(classes)} right"


def test_top_k_sorted_and_json_shape(model, esc10):
    from runtime.predict.predict import predict_file

    pred = predict_file(model, real_clip(esc10, "dog", 2))
    top = pred.top(3)
    assert len(top) == 3 and [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert top[0] == (pred.label, pred.score)
    d = pred.to_dict(2, model_sha="abc")
    assert set(d["scores"]) == set(model.labels) and len(d["top"]) == 2 and d["model_sha"] == "abc"
    json.dumps(d)


def test_long_file_streams_in_bounded_memory(model, esc10, tmp_path):
    """A 4-minute 48 kHz file (44 MB as float32) is predicted with a few MB of Python/numpy memory."""
    import tracemalloc

    from runtime.predict.predict import predict_file

    x, rate = read_pcm16(real_clip(esc10, "sea_waves"))
    from runtime.audio.resample import resample

    y = resample(x, rate, 48000)
    long = np.tile(y, 48)  # 240 s
    path = write_wav(tmp_path / "long.wav", long, 48000)
    seconds = len(long) / 48000
    del x, y, long
    tracemalloc.start()
    try:
        pred = predict_file(model, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pred.duration_s == pytest.approx(seconds)
    assert pred.n_blocks == expected_blocks(seconds, model.params)
    assert peak < 20e6, f"peak traced memory {peak / 1e6:.1f} MB"


# ---------------------------------------------------------------- valid but odd files


@pytest.mark.parametrize("rate", [8000, 11127, 44100, 48000, 192000])
def test_odd_sample_rates_get_predictions(model, esc10, tmp_path, rate):
    from runtime.audio.resample import resample
    from runtime.predict.predict import predict_file

    x, r = read_pcm16(real_clip(esc10, "crying_baby"))
    y = resample(x[: 3 * r], r, rate)
    pred = predict_file(model, write_wav(tmp_path / f"r{rate}.wav", y, rate))
    assert pred.sample_rate == rate
    assert pred.duration_s == pytest.approx(3.0, abs=2 / rate + 1e-6)
    assert pred.n_blocks == expected_blocks(3.0, model.params)
    assert np.isfinite(pred.scores).all() and (pred.scores >= 0).all() and (pred.scores <= 1).all()


@pytest.mark.parametrize("kind", ["stereo", "pcm24", "float32", "alaw"])
def test_odd_encodings_score_like_the_original(model, esc10, tmp_path, kind):
    """Stereo (same signal twice), 24-bit, float and A-law versions score (almost) like the 16-bit file."""
    from runtime.predict.predict import predict_file

    src = real_clip(esc10, "chainsaw", 2)
    x, rate = read_pcm16(src)
    if kind == "stereo":
        path = write_wav(tmp_path / "st.wav", np.stack([x, x], axis=1), rate)
    else:
        path = write_wav(tmp_path / f"{kind}.wav", x, rate, encoding=kind)
    ref = predict_file(model, src)
    got = predict_file(model, path)
    tol = 0.15 if kind == "alaw" else 1e-6  # A-law is lossy (8-bit); the others carry the same samples
    assert np.abs(got.scores - ref.scores).max() <= tol
    if kind != "alaw":
        assert got.label == ref.label


def test_50ms_clip_gets_one_padded_block(model, esc10, tmp_path):
    from runtime.predict.predict import predict_file

    x, rate = read_pcm16(real_clip(esc10, "sneezing"))
    start = int(np.argmax(np.abs(x)))  # around the sneeze
    pred = predict_file(model, write_wav(tmp_path / "short.wav", x[start : start + rate // 20], rate))
    assert pred.n_blocks == 1
    assert pred.duration_s == pytest.approx(0.05)
    assert np.isfinite(pred.scores).all()


# ---------------------------------------------------------------- broken files


def _broken_files(tmp_path: Path, esc10) -> dict[str, Path]:
    good = real_clip(esc10, "dog").read_bytes()
    files = {
        "zero-byte": b"",
        "truncated": good[:30],  # header cut inside the fmt chunk
        "header-only": good[:44],
        "random": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "text": b"this is not audio, just a note someone saved as .wav\n" * 20,
    }
    out = {name: tmp_path / f"{name}.wav" for name in files}
    for name, data in files.items():
        out[name].write_bytes(data)
    nan = np.sin(np.arange(16000) / 10.0).astype(np.float32)
    nan[8000] = np.nan
    out["nan"] = write_wav(tmp_path / "nan.wav", nan, 16000, encoding="float32")
    inf = np.sin(np.arange(16000) / 10.0).astype(np.float32)
    inf[100] = np.inf
    out["inf"] = write_wav(tmp_path / "inf.wav", inf, 16000, encoding="float32")
    (tmp_path / "folder.wav").mkdir()
    out["directory"] = tmp_path / "folder.wav"
    return out


def test_broken_files_raise_short_audio_errors(model, esc10, tmp_path):
    from runtime.predict.predict import predict_file, short_error

    for name, path in _broken_files(tmp_path, esc10).items():
        with pytest.raises(AudioError) as info:
            predict_file(model, path)
        text = short_error(info.value)
        assert "\n" not in text and 0 < len(text) <= 120, (name, text)
        assert "Traceback" not in text


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=120)


def test_cli_predict_broken_file_one_line_no_traceback(esc10, tmp_path):
    bad = _broken_files(tmp_path, esc10)["random"]
    good = real_clip(esc10, "rain")
    r = _cli("predict", "--model", str(model_dir()), str(good), str(bad))
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) <= 3, r.stderr
    assert "Traceback" not in r.stderr
    assert any(str(bad) in line and "error" in line for line in lines), r.stderr
    assert str(good) in r.stdout  # the good file was still predicted


def test_cli_predict_json_and_top_k(esc10):
    files = [real_clip(esc10, "dog", 5), real_clip(esc10, "rooster", 5)]
    r = _cli("predict", "--model", str(model_dir()), "--json", "--top-k", "2", "--threads", "1", *map(str, files))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["path"] for row in rows] == [str(f) for f in files]
    assert all(len(row["top"]) == 2 and row["model_sha"] == load_bundle(model_dir()).sha256 for row in rows)


# ---------------------------------------------------------------- broken bundles


def _copy_bundle(tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(model_dir(), dest)
    return dest


def _assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_model_dir(esc10, tmp_path):
    r = _cli("predict", "--model", str(tmp_path / "nope"), str(real_clip(esc10)))
    _assert_one_line_error(r, "model directory not found")


def test_corrupted_tflite_flipped_bytes(esc10, tmp_path):
    b = _copy_bundle(tmp_path)
    stage = load_bundle(b).stages[-1]
    data = bytearray((b / stage.file).read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    (b / stage.file).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(b)
    _assert_one_line_error(_cli("predict", "--model", str(b), str(real_clip(esc10))), "checksum mismatch")


def test_hand_edited_model_json(esc10, tmp_path):
    b = _copy_bundle(tmp_path)
    meta = json.loads((b / MODEL_JSON).read_text())
    meta["clip_pooling"] = "max" if meta.get("clip_pooling") != "max" else "mean"
    (b / MODEL_JSON).write_text(json.dumps(meta, indent=2))
    _assert_one_line_error(_cli("predict", "--model", str(b), str(real_clip(esc10))), "model.json", "edited")


def test_backend_choice_from_the_environment(esc10):
    """FIELDEAR_TFLITE_BACKEND forces an interpreter; an unknown one is one clear error line."""
    import runtime.model.interpreter as interp

    env = dict(os.environ, FIELDEAR_TFLITE_BACKEND="no-such-backend")
    r = _run_env(["predict", "--model", str(model_dir()), str(real_clip(esc10))], env)
    _assert_one_line_error(r, "no TFLite interpreter", "no-such-backend")
    name, _ = interp.find_backend()
    env["FIELDEAR_TFLITE_BACKEND"] = name
    r = _run_env(["predict", "--model", str(model_dir()), "--json", str(real_clip(esc10))], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["label"]


def _run_env(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)
