"""The device-side images: the PNG encoder, the colour table, the spectrogram of a clip, the SVG charts."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
import zlib

import numpy as np

from runtime.web.plots import counts_chart, line_chart
from runtime.web.png import COLORMAP, encode_png


def decode_png(data: bytes) -> np.ndarray:
    """Just enough of a PNG decoder for encode_png's output (8-bit RGB, filter 0)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert (depth, ctype) == (8, 2)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + 3 * width)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(height, width, 3)


def test_png_roundtrip():
    rgb = np.random.default_rng(0).integers(0, 256, (7, 13, 3), dtype=np.uint8)
    assert (decode_png(encode_png(rgb)) == rgb).all()


def test_colormap_is_ordered_dark_to_bright():
    assert COLORMAP.shape == (256, 3) and COLORMAP.dtype == np.uint8
    luma = COLORMAP @ np.array([0.299, 0.587, 0.114])
    assert (np.diff(luma) > -1.0).all() and luma[-1] > 3 * luma[0]


def test_spectrogram_of_a_tone_is_bright_at_its_mel_band():
    from runtime.web.spectrogram import frontend_params, render

    params = frontend_params(None)
    t = np.arange(int(1.0 * params.sample_rate)) / params.sample_rate
    image = decode_png(render(0.5 * np.sin(2 * np.pi * 2000 * t), params.sample_rate, params))
    assert image.shape[0] == params.n_mels
    brightness = image.astype(float).sum(axis=(1, 2))
    # the brightest row is the 2 kHz band: far from both ends of the mel axis
    assert 5 < int(np.argmax(brightness)) < params.n_mels - 5
    resampled = decode_png(render(0.5 * np.sin(2 * np.pi * 2000 * t[::3]), params.sample_rate // 3, params))
    assert resampled.shape[0] == params.n_mels


def test_charts_are_valid_svg():
    svg = counts_chart([("2026-05-01", "dog", 3), ("2026-05-02", "dog", 1), ("2026-05-02", "great_tit", 7)])
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f".//{ns}circle")) == 4 and len(root.findall(f".//{ns}polyline")) == 2
    assert "great_tit 2026-05-02: 7" in svg
    empty = ET.fromstring(line_chart([], {}, "nothing <here>"))
    assert "no data" in ET.tostring(empty, encoding="unicode")
    gaps = line_chart(["a", "b", "c"], {"x": [1.0, None, 2.0]}, "gaps")
    assert "<polyline" not in gaps and gaps.count("<circle") == 2


def test_the_spectrogram_helper_renders_exits_when_idle_and_restarts(demo_log, tmp_path):
    from runtime.web.render_worker import WorkerClient
    from runtime.web.spectrogram import SpectrogramCache

    clip = next((demo_log.parent / "clips").glob("*.wav"))
    in_process = SpectrogramCache(None, in_process=True).png(clip)
    worker = WorkerClient(None, idle_exit_s=0.5)
    try:
        assert worker.png(clip) == in_process  # the same image either way
        assert worker.pid is not None
        bad = tmp_path / "bad.wav"
        bad.write_bytes(b"not a wav")
        try:
            worker.png(bad)
            raise AssertionError("expected an error")
        except ValueError as exc:
            assert "Error" in str(exc)
        import time

        deadline = time.monotonic() + 10
        while worker.pid is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.pid is None  # idle: the helper (numpy, scipy) has exited
        assert worker.png(clip) == in_process  # started again on demand
    finally:
        worker.close()


def test_a_raw_frontend_bundle_is_drawn_with_the_backbone_log_mel(tmp_path):
    """A BirdNET bundle's blocks are raw samples: its clips are drawn with the aisfx log-mel instead."""
    import json

    from runtime.features.frontend import BACKBONE, BIRDNET_RAW
    from runtime.web.spectrogram import frontend_params

    (tmp_path / "model.json").write_text(json.dumps({"frontend": BIRDNET_RAW.to_dict()}))
    assert frontend_params(tmp_path) == BACKBONE
    (tmp_path / "model.json").write_text(json.dumps({"frontend": BACKBONE.with_block_hop(25).to_dict()}))
    assert frontend_params(tmp_path) == BACKBONE.with_block_hop(25)
