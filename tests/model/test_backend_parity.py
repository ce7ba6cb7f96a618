"""Outputs are identical across TFLite backends.

`make test` runs this file twice: under ai-edge-litert (main venv) and under tflite-runtime with numpy<2
(the original design's interpreter). Both must reproduce, bit for bit, the backbone's int8 outputs and the
default model's scores stored in tests/model/backend_parity.npz, which were computed with the reference int8
kernels (`FIELDEAR_TFLITE_XNNPACK=0`). ai-edge-litert's default XNNPACK kernels may round differently: they are
held to a few quantization steps and the same top label. Regenerate the reference with
`python -m tests.model.test_backend_parity` (only after a deliberate model change).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.features.frontend import BACKBONE
from runtime.features.pipeline import blocks_of, stack
from runtime.model.interpreter import Runner
from runtime.paths import DEFAULT_BUNDLE

pytestmark = pytest.mark.runtime

REFERENCE = Path(__file__).resolve().parent / "backend_parity.npz"
BACKBONE_FILE = DEFAULT_BUNDLE / "backbone.tflite"
HEAD_FILE = DEFAULT_BUNDLE / "head.tflite"
CLIPS = (
    "esc10/dog/esc10_1-100032-A.wav",
    "esc10/rooster/esc10_1-26806-A.wav",
    "esc10/rain/esc10_1-17367-A.wav",
    "birdsong/great_tit",
    "soundscapes/forest_24h",
    "fsdd",
)


def _clip_path(shared: Path, rel: str) -> Path:
    p = shared / rel
    return p if p.is_file() else sorted(p.rglob("*.wav"))[0]


def _blocks(shared: Path) -> np.ndarray:
    from runtime.audio.files import read_audio

    out = []
    for rel in CLIPS:
        x, rate = read_audio(_clip_path(shared, rel))
        out.append(stack(blocks_of(x, rate, BACKBONE), BACKBONE)[:2])
    return np.concatenate(out)


def _raw_backbone(runner: Runner, blocks: np.ndarray) -> np.ndarray:
    spec = runner.output_spec  # back to the int8 codes, exactly
    return np.round(runner.run(blocks) / spec["scale"] + spec["zero_point"]).astype(np.int16)


def _compute(shared: Path, xnnpack: bool) -> tuple[np.ndarray, np.ndarray]:
    backbone, head = Runner(BACKBONE_FILE, threads=1, xnnpack=xnnpack), Runner(HEAD_FILE, threads=1, xnnpack=xnnpack)
    blocks = _blocks(shared)
    return _raw_backbone(backbone, blocks), head.run(backbone.run(blocks))


def test_reference_kernels_identical_to_stored_outputs(shared_data):
    ref = np.load(REFERENCE)
    codes, scores = _compute(shared_data, xnnpack=False)
    assert codes.shape == ref["codes"].shape and len(codes) >= 10
    np.testing.assert_array_equal(codes, ref["codes"])
    np.testing.assert_array_equal(scores, ref["scores"])


def test_default_kernels_close_to_reference(shared_data):
    ref = np.load(REFERENCE)
    codes, scores = _compute(shared_data, xnnpack=True)
    tolerance = 0.05
    assert np.abs(codes - ref["codes"]).max() <= 4
    assert np.abs(scores - ref["scores"]).max() <= tolerance
    # the same top label wherever the reference's top two are further apart than the tolerance (a block whose
    # two best labels tie at the head's int8 output steps may go either way; so do blocks of background, where the
    # head gives every label a low score: 3 of the 10 stored blocks)
    top2 = np.sort(ref["scores"], axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * tolerance
    assert clear.sum() >= len(clear) // 2
    assert (scores.argmax(axis=1) == ref["scores"].argmax(axis=1))[clear].all()


if __name__ == "__main__":  # regenerate the reference
    from tests.conftest import SHARED

    codes, scores = _compute(SHARED, xnnpack=False)
    np.savez_compressed(REFERENCE, codes=codes, scores=scores)
    print(f"wrote {REFERENCE}: {codes.shape[0]} blocks", file=sys.stderr)
