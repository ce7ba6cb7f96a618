"""Float Keras model -> full-int8 TFLite (int8 input and output), and float-vs-int8 parity.

The representative set is real training inputs (blocks or embeddings). For a head that runs after
the int8 backbone, ``input_range`` widens the calibrated input range to the backbone output's
representable range, so the head's input quantization equals (or covers) the backbone's output
quantization and no value the backbone can produce is clipped.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time

import numpy as np

log = logging.getLogger(__name__)

MAX_REPRESENTATIVE = 400


def representative_sample(x: np.ndarray, seed: int, limit: int = MAX_REPRESENTATIVE) -> np.ndarray:
    """Up to ``limit`` rows of ``x`` chosen with a seeded generator."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) <= limit:
        return x
    rng = np.random.default_rng(seed)
    return x[np.sort(rng.choice(len(x), size=limit, replace=False))]


def quantize_int8(model, representative: np.ndarray, input_range: tuple[float, float] | None = None) -> bytes:
    """Convert a Keras model with one input to a full-int8 TFLite flatbuffer (int8 in, int8 out)."""
    from convert.tf_quiet import converter_output_hidden, load_tensorflow

    tf = load_tensorflow()

    rep = np.asarray(representative, dtype=np.float32)
    if len(rep) == 0:
        raise ValueError("the representative set is empty")
    in_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    rep = rep.reshape((len(rep),) + in_shape)
    extra = []
    if input_range is not None:
        # one example at each end of the range: calibrates the input tensor's range only slightly
        # beyond the data (a per-feature extreme would distort the following layers' ranges less
        # than a full vector, so only the first feature is pushed to each end).
        lo, hi = float(input_range[0]), float(input_range[1])
        for v in (lo, hi):
            e = rep[0].copy().reshape(-1)
            e[0] = v
            extra.append(e.reshape(in_shape))

    def gen():
        for item in list(rep) + extra:
            yield [item[None].astype(np.float32)]

    t0 = time.monotonic()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = gen
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with converter_output_hidden(), contextlib.redirect_stdout(io.StringIO()):  # Keras prints "Saved artifact at ..."
        flat = converter.convert()
    log.info("int8 TFLite: %.1f kB in %.1f s (%d representative inputs)", len(flat) / 1024,
             time.monotonic() - t0, len(rep) + len(extra))
    return bytes(flat)


def keras_predict(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Float predictions of a Keras model, (n, ...) -> (n, n_out)."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])), dtype=np.float32)
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)
