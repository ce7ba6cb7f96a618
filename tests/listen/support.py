"""Helpers for the listening tests (no tests here): a small bundle = the ported aisfx backbone + a head.

The head is a dense softmax layer over the 512-d embedding, int8-quantized with TensorFlow. With
``train_clips`` it is fitted (logistic regression on embeddings) so that it actually recognises sounds;
otherwise its weights come from a seeded generator (enough for plumbing and invariance tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BACKBONE = ROOT / "runtime" / "models" / "aisfx" / "backbone_int8.tflite"


def head_tflite(weights: np.ndarray, bias: np.ndarray, embed_scale: float, embed_zp: int, seed: int = 0) -> bytes:
    import tensorflow as tf

    from convert.quantize import quantize_int8

    n_in, n_out = weights.shape
    inp = tf.keras.Input(shape=(n_in,), batch_size=1)
    out = tf.keras.layers.Dense(n_out, activation="softmax")(inp)
    model = tf.keras.Model(inp, out)
    model.layers[-1].set_weights([weights.astype(np.float32), bias.astype(np.float32)])
    codes = np.random.default_rng(seed).integers(-128, 128, size=(64, n_in))
    return quantize_int8(model, ((codes - embed_zp) * embed_scale).astype(np.float32))


def make_bundle(out: Path, labels: list[str], weights=None, bias=None, thresholds=None, seed: int = 0) -> Path:
    """Write a two-stage bundle (backbone + head) to ``out``."""
    from runtime.features.frontend import BACKBONE as PARAMS
    from runtime.model.bundle import write_bundle
    from runtime.model.interpreter import Runner

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
    from runtime.audio.files import read_audio
    from runtime.features.frontend import BACKBONE as PARAMS
    from runtime.features.pipeline import blocks_of
    from runtime.model.interpreter import Runner

    bb = backbone or Runner(BACKBONE)
    out = []
    for p in paths:
        x, rate = read_audio(p)[:2]
        embs = [bb.run_one(b.features) for b in blocks_of(x, rate, PARAMS)]
        out.append(np.mean(embs, axis=0))
    return np.stack(out)


class FakePortAudioError(Exception):
    pass


class FakeStream:
    """Calls the callback from a thread with audio from ``signal`` (looped), like PortAudio would."""

    def __init__(self, sd, device, samplerate, channels, dtype, blocksize, callback, finished_callback=None):
        import threading

        self.sd, self.rate, self.blocksize = sd, samplerate, blocksize
        self.callback, self.finished_callback = callback, finished_callback
        self.active = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        if self.sd.fail_open:
            raise FakePortAudioError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
        self.active = True
        self.sd.streams.append(self)
        self._thread.start()

    def _run(self):
        import time as _time

        pos = 0
        sig = self.sd.signal
        while not self._stop.is_set():
            if self.sd.unplug_after is not None and self.sd.delivered >= self.sd.unplug_after:
                self.sd.unplug_after = None
                self.active = False
                if self.finished_callback:
                    self.finished_callback()
                return
            idx = (np.arange(pos, pos + self.blocksize) % len(sig))
            block = sig[idx].reshape(-1, 1).astype(np.float32)
            pos += self.blocksize
            status = type("Status", (), {"input_overflow": self.sd.overflow_every is not None
                                         and self.sd.delivered % self.sd.overflow_every == 1})()
            self.callback(block, self.blocksize, None, status)
            self.sd.delivered += 1
            _time.sleep(self.sd.block_sleep)

    def abort(self):
        self._stop.set()
        self.active = False

    def close(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


class FakeSoundDevice:
    """Stands in for the ``sounddevice`` module: one input device that only accepts ``rates``."""

    PortAudioError = FakePortAudioError

    def __init__(self, rates=(44100, 48000), default_rate=48000, signal=None, block_sleep=0.0,
                 unplug_after=None, overflow_every=None, no_device=False):
        self.rates = tuple(rates)
        self.default_rate = default_rate
        self.signal = signal if signal is not None else np.zeros(4800, np.float32)
        self.block_sleep = block_sleep
        self.unplug_after = unplug_after
        self.overflow_every = overflow_every
        self.no_device = no_device
        self.fail_open = False
        self.delivered = 0
        self.streams = []
        self.default = type("Default", (), {"device": [0, 0]})()

    def query_devices(self, device=None, kind=None):
        dev = {"name": "Fake USB Mic", "hostapi": 0, "max_input_channels": 1, "max_output_channels": 0,
               "default_samplerate": float(self.default_rate)}
        if self.no_device:
            if kind == "input":
                raise FakePortAudioError("No input device matching ''")
            return []
        return dev if kind == "input" or device is not None else [dev]

    def check_input_settings(self, device=None, channels=None, dtype=None, samplerate=None, **kw):
        if self.no_device:
            raise FakePortAudioError("no device")
        if int(samplerate) not in self.rates:
            raise FakePortAudioError(f"Invalid sample rate [PaErrorCode -9997] ({samplerate})")

    def InputStream(self, **kw):
        return FakeStream(self, **kw)

    def rec(self, frames, samplerate, channels, dtype, device=None):
        idx = np.arange(frames) % len(self.signal)
        return self.signal[idx].reshape(-1, 1).astype(np.float32)

    def wait(self):
        pass
