"""Helpers for the listening tests (no tests here): a small bundle = the ported aisfx backbone + a head.

The head is a dense softmax layer over the 512-d embedding, int8-quantized with TensorFlow. With
``train_clips`` it is fitted (logistic regression on embeddings) so that it actually recognises sounds;
otherwise its weights come from a seeded generator (enough for plumbing and invariance tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BACKBONE = ROOT / "runtime" / "models" / "aisfx" / "backbone_int8.tflite"


def head_tflite(weights: np.ndarray, bias: np.ndarray, embed_scale: float, embed_zp: int, seed: int = 0) -> bytes:
    import tensorflow as tf

    n_in, n_out = weights.shape
    inp = tf.keras.Input(shape=(n_in,), batch_size=1)
    out = tf.keras.layers.Dense(n_out, activation="softmax")(inp)
    model = tf.keras.Model(inp, out)
    model.layers[-1].set_weights([weights.astype(np.float32), bias.astype(np.float32)])
    rng = np.random.default_rng(seed)

    def rep():
        for _ in range(64):
            q = rng.integers(-128, 128, size=(1, n_in))
            yield [((q - embed_zp) * embed_scale).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def make_bundle(out: Path, labels: list[str], weights=None, bias=None, thresholds=None, seed: int = 0) -> Path:
    """Write a two-stage bundle (backbone + head) to ``out``."""
    from runtime.bundle import write_bundle
    from runtime.frontend import BACKBONE as PARAMS
    from runtime.interpreter import Runner

    bb = Runner(BACKBONE)
    rng = np.random.default_rng(seed)
    if weights is None:
        weights = rng.normal(0, 0.3, size=(512, len(labels)))
        bias = np.zeros(len(labels))
    head = head_tflite(weights, bias, bb.output_spec["scale"], bb.output_spec["zero_point"], seed)
    hr = Runner(head)
    meta = {
        "name": "test-listen", "fieldear_version": "test", "labels": list(labels), "frontend": PARAMS.to_dict(),
        "stages": [
            {"file": "backbone.tflite", "role": "embedding", "input": bb.input_spec, "output": bb.output_spec},
            {"file": "head.tflite", "role": "classifier", "input": hr.input_spec, "output": hr.output_spec},
        ],
        "clip_pooling": "mean", "thresholds": thresholds or {l: 0.5 for l in labels}, "metrics": {},
        "dataset": {}, "files": {},
    }
    return write_bundle(out, {"backbone.tflite": BACKBONE, "head.tflite": head}, meta, force=True)


def embeddings(paths, backbone=None) -> np.ndarray:
    """Mean backbone embedding per file (blocks from the shared pipeline)."""
    from runtime.audio import read_audio
    from runtime.frontend import BACKBONE as PARAMS
    from runtime.interpreter import Runner
    from runtime.pipeline import blocks_of

    bb = backbone or Runner(BACKBONE)
    out = []
    for p in paths:
        x, rate = read_audio(p)[:2]
        embs = [bb.run_one(b.features) for b in blocks_of(x, rate, PARAMS)]
        out.append(np.mean(embs, axis=0))
    return np.stack(out)
