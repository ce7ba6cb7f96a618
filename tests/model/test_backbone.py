"""The committed int8 aisfx backbone against PyTorch fp32 embeddings stored by convert/tools/backbone_port.py.

Needs neither torch nor TensorFlow: blocks are recomputed from ../shared/data with the device's own
path (runtime.audio -> runtime.features.pipeline.blocks_of) and run through runtime.model.interpreter.Runner.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from runtime.audio.files import read_audio
from runtime.features.frontend import BACKBONE
from runtime.features.pipeline import blocks_of
from runtime.model.interpreter import Runner
from tests.conftest import shared_path

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "runtime" / "models" / "aisfx"
TFLITE = MODEL_DIR / "backbone_int8.tflite"
REFERENCE = Path(__file__).with_name("backbone_reference.npz")


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def reference() -> dict:
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner(TFLITE, threads=1)


@pytest.fixture(scope="module")
def int8_embeddings(reference, runner) -> np.ndarray:
    out = []
    for rel, index in zip(reference["paths"], reference["block_index"]):
        samples, rate = read_audio(shared_path(*str(rel).split("/")))
        blocks = blocks_of(samples, rate, BACKBONE)
        assert int(index) < len(blocks), f"{rel} gives only {len(blocks)} blocks"
        out.append(runner.run_one(blocks[int(index)].features))
    return np.stack(out)


def test_model_io_is_int8_with_the_backbone_shapes(runner):
    assert runner.input_spec["shape"] == [1, BACKBONE.block_frames, BACKBONE.n_mels]
    assert runner.input_spec["dtype"] == "int8"
    assert runner.output_spec["shape"] == [1, 512]
    assert runner.output_spec["dtype"] == "int8"
    assert runner.input_spec["scale"] > 0 and runner.output_spec["scale"] > 0
    y = runner.run_one(np.zeros((BACKBONE.block_frames, BACKBONE.n_mels), np.float32))
    assert y.shape == (512,) and y.dtype == np.float32


def test_port_report_describes_the_committed_file():
    report = json.loads((MODEL_DIR / "port_report.json").read_text())
    assert report["sha256"] == hashlib.sha256(TFLITE.read_bytes()).hexdigest()
    assert (MODEL_DIR / "ATTRIBUTION.md").read_text().count("CC BY 4.0") >= 1


def test_reference_covers_distinct_sources(reference):
    assert len(reference["paths"]) >= 12
    assert reference["embeddings"].shape == (len(reference["paths"]), 512)
    assert len(set(reference["sources"].tolist())) == len(reference["paths"])


def test_int8_matches_pytorch_fp32_on_real_blocks(reference, int8_embeddings):
    cos = np.sum(_unit(int8_embeddings) * _unit(reference["embeddings"]), axis=1)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.98, f"block {reference['paths'][worst]}#{reference['block_index'][worst]}: cosine {cos.min():.4f}"
    assert np.median(cos) >= 0.99, f"median cosine {np.median(cos):.4f}"


def test_each_block_is_closest_to_its_own_reference(reference, int8_embeddings):
    # int8 embedding of block i vs the PyTorch embeddings of all stored blocks (different sounds)
    sims = _unit(int8_embeddings) @ _unit(reference["embeddings"]).T
    own = np.diag(sims)
    others = np.where(np.eye(len(sims), dtype=bool), -np.inf, sims).max(axis=1)
    assert np.all(np.argmax(sims, axis=1) == np.arange(len(sims)))
    assert np.all(own - others >= 0.03), f"margins {np.round(own - others, 3)}"


def test_different_sound_classes_give_clearly_different_embeddings(reference, int8_embeddings):
    sources = reference["sources"].tolist()
    dog, rain = sources.index("esc10/dog"), sources.index("esc10/rain")
    birds, chainsaw = sources.index("great_tit"), sources.index("esc10/chainsaw")
    e = _unit(int8_embeddings)
    assert float(e[dog] @ e[rain]) < 0.9
    assert float(e[birds] @ e[chainsaw]) < 0.9
