"""TensorFlow and Keras, imported once and quietly: TensorFlow's native start-up lines (absl, oneDNN, CUDA probing,
cpu_feature_guard) are dropped where they are made; anything else it writes to stderr still shows. With -v
(debug logging) nothing is dropped."""

from __future__ import annotations

import functools
import logging
import os

from runtime.native_stderr import filtered_stderr

log = logging.getLogger(__name__)

# Parts of the lines TensorFlow writes on every start on a machine without a GPU; none asks the user to act.
START_UP_NOISE = (
    b"All log messages before absl::InitializeLog() is called",
    b"oneDNN custom operations are on",
    b"cudart_stub.cc",
    b"cuda_platform.cc",
    b"failed call to cuInit",
    b"cuda_executor",
    b"Unable to register cu",
    b"computation_placer.cc",
    b"cpu_feature_guard.cc",
    b"To enable the following instructions:",
    b"TF-TRT Warning",
)


def is_start_up_noise(line: bytes) -> bool:
    return any(part in line for part in START_UP_NOISE)


def _debug() -> bool:
    return log.isEnabledFor(logging.DEBUG)


def converter_output_hidden():
    """The TFLite converter's native chatter (MLIR passes, quantizer notes) hidden unless debug logging is on."""
    return filtered_stderr(lambda line: not _debug())


@functools.cache
def load_keras():
    """The keras module, TensorFlow imported and its devices probed (where the CUDA lines come from) quietly."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    with filtered_stderr(lambda line: not _debug() and is_start_up_noise(line)):
        import keras as keras_module
        import tensorflow as tf

        tf.config.list_physical_devices()
        keras_module.ops.convert_to_tensor([0.0])  # the first op: TensorFlow's device set-up
    return keras_module


def load_tensorflow():
    """The tensorflow module, imported as ``load_keras()`` does."""
    load_keras()
    import tensorflow as tf

    return tf
