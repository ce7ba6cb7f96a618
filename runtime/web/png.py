"""A tiny PNG encoder (zlib + struct, no Pillow) and a viridis-like colour table, for spectrogram images."""

from __future__ import annotations

import struct
import zlib

import numpy as np

# Anchor colours of a perceptually ordered dark-blue -> green -> yellow map (close to matplotlib's viridis).
_ANCHORS = np.array([
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
    (31, 158, 137), (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37),
], dtype=np.float64)


def colormap(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 RGB table."""
    x = np.linspace(0.0, len(_ANCHORS) - 1, n)
    idx = np.arange(len(_ANCHORS))
    return np.stack([np.interp(x, idx, _ANCHORS[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


COLORMAP = colormap()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """(height, width, 3) uint8 -> PNG bytes (8-bit RGB, no filtering)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (h, w, 3), got {rgb.shape}")
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def to_rgb(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Values scaled to [lo, hi] -> RGB through COLORMAP."""
    span = max(hi - lo, 1e-9)
    idx = np.clip((values - lo) / span * 255.0, 0, 255).astype(np.uint8)
    return COLORMAP[idx]
