"""The one frontend: pure steps, librosa parity, and chunk-size invariance on real audio."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.audio.resample import StreamResampler, design_filter, ratio, resample
from runtime.features import frontend as fe
from runtime.features.pipeline import BlockStream, blocks_of, stack

pytestmark = pytest.mark.runtime


def _real_clip(esc10, cls="dog"):
    import scipy.io.wavfile

    path = sorted((esc10 / cls).glob("*.wav"))[0]
    rate, x = scipy.io.wavfile.read(path)
    return x.astype(np.float32) / 32768.0, rate


def test_mel_filterbank_unit_sum_and_shape():
    fb = fe.mel_filterbank(44100, 2048, 96, 0.0, 22050.0)
    assert fb.shape == (1025, 96)
    np.testing.assert_allclose(fb.sum(axis=0), 1.0, rtol=1e-5)
    assert (fb >= 0).all()


def test_frame_count_is_centred(esc10):
    x, _ = _real_clip(esc10)
    p = fe.SMALL
    assert fe.logmel(x, p).shape == (1 + len(x) // p.hop, p.n_mels)


def test_matches_librosa(esc10):
    librosa = pytest.importorskip("librosa")  # absent from the tflite-runtime venv only
    x, rate = _real_clip(esc10, "rooster")
    p = fe.SMALL
    ours = fe.logmel(x, p)
    S = librosa.feature.melspectrogram(
        y=x, sr=rate, n_fft=p.n_fft, hop_length=p.hop, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax,
        htk=True, norm=1.0, power=2.0, center=True, pad_mode="constant",
    )
    ref = (np.log10(p.log_mult * S + 1) / p.log_div).T
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def _stream(x, params, sizes):
    stream = fe.StreamingFrontend(params)
    parts, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        parts.append(stream.push(x[i : i + n]))
        i, k = i + n, k + 1
    parts.append(stream.flush())
    return np.concatenate(parts)


@pytest.mark.parametrize("sizes", [[1], [7, 1000, 3], [4096], [16000 * 3], [333, 1]])
def test_streaming_any_chunk_size_equals_whole_clip(esc10, sizes):
    x, rate = _real_clip(esc10, "crying_baby")
    x = resample(x, rate, fe.BACKBONE.sample_rate)
    whole = fe.logmel(x, fe.BACKBONE)
    got = _stream(x, fe.BACKBONE, sizes)
    assert got.shape == whole.shape
    np.testing.assert_array_equal(got, whole)


@pytest.mark.parametrize("params", [fe.BACKBONE, fe.SMALL], ids=["backbone", "small"])
def test_streaming_is_bit_identical_for_any_chunk_size(esc10, params):
    """Chunked frames equal whole-clip frames exactly: every step (rfft, mel sums, log) is per frame."""
    x, rate = _real_clip(esc10, "rooster")
    x = resample(x, rate, params.sample_rate)
    whole = fe.logmel(x, params)
    assert whole.shape == (1 + len(x) // params.hop, params.n_mels) and whole.max() > 0.1
    for sizes in ([1], [7], [100], [1023], [1024], [1025], [4096], [44100], [len(x)], [1, 2047, 5, 30000]):
        got = _stream(x, params, sizes)
        assert got.shape == whole.shape, sizes
        assert np.array_equal(got, whole), (sizes, float(np.abs(got - whole).max()))


@pytest.mark.parametrize("params", [fe.BACKBONE, fe.SMALL], ids=["backbone", "small"])
def test_each_frame_is_a_function_of_itself_alone(esc10, params, monkeypatch):
    """frames_to_logmel of one frame, of a few and of all of them (several transform blocks) agree exactly."""
    x, rate = _real_clip(esc10, "dog")
    x = resample(x, rate, params.sample_rate)
    half = params.n_fft // 2
    padded = np.concatenate([np.zeros(half, np.float32), x, np.zeros(half, np.float32)])
    frames = fe.frame_signal(padded, params.n_fft, params.hop, fe.n_frames_for(len(x), params))
    whole = fe.frames_to_logmel(frames, params)
    monkeypatch.setattr(fe, "BLOCK_SAMPLES", 50 * params.n_fft)  # blocks of 50 frames: 5+ blocks
    assert np.array_equal(fe.frames_to_logmel(frames, params), whole)
    singles = np.concatenate([fe.frames_to_logmel(frames[i : i + 1], params) for i in range(len(frames))])
    assert np.array_equal(singles, whole)
    for a, b in ((3, 10), (5, 6), (17, 200)):
        assert np.array_equal(fe.frames_to_logmel(frames[a:b], params), whole[a:b])


def test_sparse_filterbank_is_the_dense_one():
    for p in (fe.BACKBONE, fe.SMALL):
        dense = fe.mel_filterbank(p.sample_rate, p.n_fft, p.n_mels, p.fmin, p.fmax)
        sparse = fe.mel_filterbank_sparse(p.sample_rate, p.n_fft, p.n_mels, p.fmin, p.fmax)
        assert np.array_equal(sparse.toarray(), dense.T)
        assert sparse.nnz <= 2 * dense.shape[0]  # each bin on at most two triangles


@pytest.mark.parametrize("chunk", [1, 513, 4000, 80000])
def test_block_stream_invariant_from_raw_audio(esc10, chunk):
    x, rate = _real_clip(esc10, "helicopter")
    ref = stack(blocks_of(x, rate, fe.BACKBONE), fe.BACKBONE)
    stream = BlockStream(fe.BACKBONE, rate)
    blocks = []
    for i in range(0, len(x), chunk):
        blocks += stream.push(x[i : i + chunk])
    blocks += stream.flush()
    got = stack(blocks, fe.BACKBONE)
    assert got.shape == ref.shape == (3, 100, 96)
    np.testing.assert_array_equal(got, ref)
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert blocks[1].start_s == pytest.approx(fe.BACKBONE.block_hop_seconds)


def test_short_clip_gives_one_padded_block():
    x = np.random.default_rng(0).standard_normal(800).astype(np.float32) * 0.1  # 50 ms at 16 kHz
    blocks = blocks_of(x, 16000, fe.BACKBONE)
    assert len(blocks) == 1
    feats = blocks[0].features
    assert feats.shape == (100, 96)
    assert feats[:2].max() > 0 and np.all(feats[10:] == 0)


def test_empty_input_gives_no_blocks():
    assert blocks_of(np.zeros(0, np.float32), 16000, fe.BACKBONE) == []


@pytest.mark.parametrize("rates", [(16000, 44100), (48000, 44100), (8000, 44100), (11127, 44100), (192000, 44100), (44100, 16000)])
def test_resampler_chunk_invariant_and_equals_resample_poly(rates):
    import scipy.signal

    a, b = rates
    x = np.random.default_rng(1).standard_normal(12345).astype(np.float32)
    whole = resample(x, a, b)
    up, down = ratio(a, b)
    ref = scipy.signal.resample_poly(x.astype(np.float64), up, down, window=design_filter(up, down).astype(np.float64) / up)
    assert len(whole) == len(ref) == -(-len(x) * up // down)
    np.testing.assert_allclose(whole, ref, atol=1e-5)
    r = StreamResampler(a, b)
    rng = np.random.default_rng(2)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 3000))
        parts.append(r.push(x[i : i + n]))
        i += n
    parts.append(r.flush())
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_resampler_rejects_images_above_old_nyquist():
    # a 7.5 kHz tone at 16 kHz, up to 44.1 kHz: its image at 8.5 kHz must be far below the tone
    t = np.arange(16000 * 2) / 16000
    y = resample(np.sin(2 * np.pi * 7500 * t).astype(np.float32), 16000, 44100)[4410:-4410]
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 44100)
    tone = spec[np.abs(freqs - 7500) < 20].max()
    image = spec[np.abs(freqs - 8500) < 20].max()
    assert 20 * np.log10(image / tone) < -60


def test_params_roundtrip_and_validation():
    from runtime.errors import BundleError

    assert fe.FrontendParams.from_dict(fe.BACKBONE.to_dict()) == fe.BACKBONE
    with pytest.raises(BundleError):
        fe.FrontendParams.from_dict({**fe.BACKBONE.to_dict(), "hop": 0})
    with pytest.raises(BundleError):
        fe.FrontendParams.from_dict({k: v for k, v in fe.BACKBONE.to_dict().items() if k != "n_mels"})


@pytest.mark.parametrize("chunk", [1, 4000, 70001])
def test_raw_frontend_blocks_are_windows_of_the_resampled_audio(esc10, chunk):
    """A raw frontend (BirdNET's): blocks are 3 s windows every 1.5 s of the audio resampled to 48 kHz, the same
    for any chunk size, their times those of the windows."""
    p = fe.BIRDNET_RAW
    x, rate = _real_clip(esc10, "rooster")
    y = resample(x, rate, p.sample_rate)
    stream = BlockStream(p, rate)
    blocks = []
    for i in range(0, len(x), chunk):
        blocks += stream.push(x[i : i + chunk])
    blocks += stream.flush()
    assert len(blocks) == 1 + (len(y) - p.block_frames) // p.block_hop == 2  # 5 s: windows at 0 and 1.5 s
    for k, b in enumerate(blocks):
        assert b.features.shape == (p.block_frames, 1)
        assert b.start_s == pytest.approx(1.5 * k) and b.end_s == pytest.approx(1.5 * k + 3.0)
        np.testing.assert_allclose(b.features[:, 0], y[k * p.block_hop : k * p.block_hop + p.block_frames], atol=1e-6)


def test_raw_frontend_short_clip_gives_one_zero_padded_window():
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1  # 1 s at 16 kHz
    blocks = blocks_of(x, 16000, fe.BIRDNET_RAW)
    assert len(blocks) == 1 and blocks[0].features.shape == (144000, 1)
    assert np.abs(blocks[0].features[:40000]).max() > 0 and np.all(blocks[0].features[50000:] == 0)


def test_frontend_kind_roundtrip_and_validation():
    from runtime.errors import BundleError

    assert "kind" not in fe.BACKBONE.to_dict()  # log-mel bundles' model.json unchanged
    assert fe.FrontendParams.from_dict(fe.BIRDNET_RAW.to_dict()) == fe.BIRDNET_RAW
    assert fe.BIRDNET_RAW.block_seconds == 3.0 and fe.BIRDNET_RAW.block_hop_seconds == 1.5
    with pytest.raises(BundleError, match="kind"):
        fe.FrontendParams.from_dict({**fe.BACKBONE.to_dict(), "kind": "mfcc"})
    with pytest.raises(BundleError, match="raw"):
        fe.FrontendParams.from_dict({**fe.BIRDNET_RAW.to_dict(), "hop": 2})

def test_a_frames_spectrum_does_not_depend_on_the_frames_beside_it(esc10):
    """Each frame's squared spectrum is the same whether it is transformed alone or with 1..8 others (on aarch64
    scipy's FFT rounds a group of 4 frames unlike a frame left over, hence FFT_GROUP's padding)."""
    x, _ = _real_clip(esc10, "rain")
    p = fe.BACKBONE
    frames = fe.frame_signal(x, p.n_fft, p.hop, 9)
    window = fe.hann_window(p.n_fft)
    alone = np.concatenate([fe.squared_spectrum(frames[i : i + 1], window) for i in range(9)], axis=1)
    for n in range(1, 10):
        np.testing.assert_array_equal(fe.squared_spectrum(frames[:n], window), alone[:, : 2 * n])
