"""TFLite interpreter chosen at run time: ai_edge_litert, then tflite_runtime, then tensorflow.lite.

``Runner`` wraps one model file: float32 in, float32 out, int8/uint8 (de)quantization done here
from the model's own quantization parameters. ``FIELDEAR_TFLITE_XNNPACK=0`` (or ``xnnpack=False``) selects
the reference kernels, whose outputs are identical across backends.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from pathlib import Path

import numpy as np

from runtime.errors import BundleError, FieldearError
from runtime.native_stderr import filtered_stderr

log = logging.getLogger(__name__)

# (name shown to users, module, attribute path to the Interpreter class)
BACKENDS = (
    ("ai-edge-litert", "ai_edge_litert.interpreter", "Interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow", "tensorflow.lite", "Interpreter"),  # last resort; never needed on a device
)


@functools.lru_cache(maxsize=4)
def find_backend(preferred: str | None = None) -> tuple[str, type]:
    """Return (name, Interpreter class) of the first importable backend.

    ``preferred`` (or the FIELDEAR_TFLITE_BACKEND variable) forces one by name.
    """
    want = preferred or os.environ.get("FIELDEAR_TFLITE_BACKEND") or None
    tried = []
    for name, module, attr in BACKENDS:
        if want and name != want:
            continue
        try:
            mod = importlib.import_module(module)
            return name, getattr(mod, attr)
        except Exception as exc:  # ImportError, or a broken install raising anything
            tried.append(f"{name}: {type(exc).__name__}")
            log.debug("TFLite backend %s unavailable: %s", name, exc)
    raise FieldearError(
        "no TFLite interpreter is installed" + (f" (asked for {want})" if want else "") + f" [{'; '.join(tried)}]",
        "pip install ai-edge-litert  (or tflite-runtime on Python <= 3.11)",
    )


def backend_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def _op_resolver_type(interpreter_cls):
    """The backend's OpResolverType enum (it lives beside its Interpreter class), or None."""
    module = importlib.import_module(interpreter_cls.__module__)
    return getattr(module, "OpResolverType", None)


# The one line the TFLite C++ runtime writes to stderr on every interpreter it builds; it says nothing to a user.
_DELEGATE_BANNER = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def _tensor_spec(detail: dict) -> dict:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {
        "shape": [int(x) for x in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


class Runner:
    """One TFLite model, run one example at a time (the models have batch size 1)."""

    def __init__(self, model: str | Path | bytes, threads: int | None = None, backend: str | None = None,
                 xnnpack: bool | None = None):
        self.backend_name, cls = find_backend(backend)
        kwargs = {"num_threads": int(threads)} if threads else {}
        if xnnpack is None:
            xnnpack = os.environ.get("FIELDEAR_TFLITE_XNNPACK", "1") != "0"
        if not xnnpack:
            # The reference int8 kernels: bit-identical across backends (tflite-runtime 2.14 runs int8 on them
            # anyway), about 3x slower than XNNPACK, whose int8 results differ by a step here and there.
            resolver = _op_resolver_type(cls)
            if resolver is not None:
                kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.xnnpack = xnnpack
        try:
            with filtered_stderr(lambda line: line == _DELEGATE_BANNER):
                if isinstance(model, (bytes, bytearray)):
                    self._interp = cls(model_content=bytes(model), **kwargs)
                else:
                    self._interp = cls(model_path=str(model), **kwargs)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            where = "in-memory model" if isinstance(model, (bytes, bytearray)) else str(model)
            raise BundleError(f"cannot load TFLite model {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                              "the file is damaged; copy the bundle again") from None
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise BundleError(f"model must have exactly one input and one output, has {len(ins)} and {len(outs)}")
        self._in, self._out = ins[0], outs[0]
        self.input_spec, self.output_spec = _tensor_spec(self._in), _tensor_spec(self._out)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.input_spec["shape"])

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        spec = self.input_spec
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            return x.astype(dtype, copy=False)
        info = np.iinfo(dtype)
        q = np.round(x / spec["scale"]) + spec["zero_point"]
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        spec = self.output_spec
        if np.dtype(spec["dtype"]).kind == "f":
            return y.astype(np.float32, copy=False)
        return ((y.astype(np.float32) - spec["zero_point"]) * spec["scale"]).astype(np.float32)

    def run_one(self, x: np.ndarray) -> np.ndarray:
        """One example without the batch axis; returns the output without the batch axis."""
        x = np.asarray(x, dtype=np.float32).reshape(self.input_shape)
        self._interp.set_tensor(self._in["index"], self._quantize(x))
        self._interp.invoke()
        return self._dequantize(self._interp.get_tensor(self._out["index"]))[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """A batch (n, ...) -> (n, ...) outputs, one invoke each."""
        batch = np.asarray(batch, dtype=np.float32)
        if len(batch) == 0:
            return np.zeros((0,) + tuple(self.output_spec["shape"][1:]), dtype=np.float32)
        return np.stack([self.run_one(x) for x in batch])
