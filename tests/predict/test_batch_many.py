"""fieldear batch on a folder of 10,000 files (slow; needs TensorFlow to make a tiny test model)."""

from __future__ import annotations

import csv
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.predict.batch import run_batch
from tests.predict.test_predict import read_pcm16, real_clip, write_wav

ROOT = Path(__file__).resolve().parents[2]


TINY_MODEL = r"""
import sys
import numpy as np
import tensorflow as tf
from runtime.model.bundle import write_bundle
from runtime.features.frontend import BACKBONE as p
from runtime.model.interpreter import Runner

labels = ["a", "b", "c"]
inp = tf.keras.Input((p.block_frames, p.n_mels), batch_size=1)
x = tf.keras.layers.Reshape((p.block_frames, p.n_mels, 1))(inp)
x = tf.keras.layers.Conv2D(4, 5, strides=4, activation="relu")(x)
x = tf.keras.layers.GlobalAveragePooling2D()(x)
out = tf.keras.layers.Dense(len(labels), activation="softmax")(x)
model = tf.keras.Model(inp, out)
rng = np.random.default_rng(0)
conv = tf.lite.TFLiteConverter.from_keras_model(model)
conv.optimizations = [tf.lite.Optimize.DEFAULT]
conv.representative_dataset = lambda: ([rng.random((1, p.block_frames, p.n_mels), dtype=np.float32)] for _ in range(8))
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
conv.inference_input_type = conv.inference_output_type = tf.int8
data = conv.convert()
r = Runner(data)
stage = {"file": "tiny.tflite", "role": "classifier", "input": r.input_spec, "output": r.output_spec}
meta = {"name": "tiny-test", "labels": labels, "frontend": p.to_dict(), "stages": [stage], "clip_pooling": "mean",
        "thresholds": {}, "metrics": {}, "dataset": {}}
write_bundle(sys.argv[1], {"tiny.tflite": data}, meta)
"""


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A 3-label single-stage int8 model (a few microseconds per block), made with TensorFlow in a subprocess
    (so that the test process, which forks workers, never loads TensorFlow)."""
    out = tmp_path_factory.mktemp("tiny") / "bundle"
    r = subprocess.run([sys.executable, "-c", TINY_MODEL, str(out)], capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.train
def test_ten_thousand_files_with_two_jobs(tmp_path, esc10, tiny_bundle):
    """10,000 tiny files (spread over 100 folders) in one run with --jobs 2, in under a minute.

    The model is a tiny one, so that the time measured is batch's own (listing, workers, rows), not the
    backbone's (about 5-10 ms per block on a laptop core: 10,000 blocks alone would take 25-50 s).
    The limit is on CPU seconds (this process and its workers) as well as wall time, so that a busy
    machine does not fail the test: a quadratic listing or per-file model load would still blow it.
    """
    x, rate = read_pcm16(real_clip(esc10, "clock_tick"))
    tiny = write_wav(tmp_path / "tiny.wav", x[: rate // 10], rate).read_bytes()
    root = tmp_path / "many"
    for d in range(100):
        folder = root / f"d{d:03d}"
        folder.mkdir(parents=True)
        for i in range(100):
            (folder / f"c{i:03d}.wav").write_bytes(tiny)
    out = tmp_path / "many.csv"

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    start, cpu0 = time.monotonic(), cpu()
    summary = run_batch([str(root)], out, model_dir=str(tiny_bundle), jobs=2)
    elapsed, used = time.monotonic() - start, cpu() - cpu0
    assert summary.ok == 10_000 and summary.failed == 0
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10_000 and len({r["path"] for r in rows}) == 10_000
    assert len({r["label"] for r in rows}) == 1  # the same audio everywhere gives the same answer
    assert used < 60 and (elapsed < 60 or used < 30), f"{used:.1f} CPU s ({elapsed:.1f} s wall)"
