"""``fieldear convert``: bring your own Keras model; get a checked int8 bundle.

The model's input must be one fieldear log-mel block of the chosen frontend: ``(block_frames, n_mels)``
or ``(block_frames, n_mels, 1)``; its output one probability per label (softmax inside the model).
Blocks from ``--data`` (computed by the runtime's pipeline) calibrate the full-int8 quantization;
float and int8 are then compared on every clip of ``--data`` with the runtime interpreter, thresholds
are chosen per label from the int8 clip scores, and a single-stage bundle is written with its report.
If ``--data`` is the model's own training data, the accuracy in the report is optimistic (the report
says so).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.bundle_meta import (
    check_out,
    dataset_summary,
    fieldear_version,
    int8_parity,
    model_meta,
    publish_bundle,
    thresholds_from_oof,
)
from runtime.errors import BundleError, FieldearError

log = logging.getLogger(__name__)


@dataclass
class ConvertOptions:
    model: str | Path
    data: str | Path
    out: str | Path
    frontend: str = "small"
    labels: tuple[str, ...] | None = None
    pooling: str = "mean"
    seed: int = 0
    force: bool = False
    strict: bool = False
    name: str | None = None


def frontend_params(name: str):
    from runtime.features.frontend import BACKBONE, SMALL

    presets = {"small": SMALL, "backbone": BACKBONE}
    if name not in presets:
        raise FieldearError(f"unknown frontend {name!r}", "choose small or backbone")
    return presets[name]


def load_keras_model(path: str | Path):
    """Load a .keras/.h5 model without its training configuration; a clear error if that fails."""
    path = Path(path)
    if not path.is_file():
        raise FieldearError(f"Keras model not found: {path}", "give the path of a .keras (or .h5) file")
    from convert.tf_quiet import load_keras

    keras = load_keras()

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for damaged or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FieldearError(f"cannot load Keras model {path}: {first[:200]}",
                            "save it with model.save('my_model.keras') (Keras 3), custom layers are not supported") from None


def check_input_shape(model, params, frontend_name: str) -> bool:
    """True if the model takes a trailing channel axis; BundleError naming both shapes if it does not fit."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise BundleError(f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; fieldear needs one of each")
    got = tuple(None if d is None else int(d) for d in model.inputs[0].shape[1:])
    want = (params.block_frames, params.n_mels)
    if got == want:
        return False
    if got == want + (1,):
        return True
    raise BundleError(
        f"model input shape {got} does not match the {frontend_name} frontend's block shape {want} "
        f"(or {want + (1,)})",
        "train the model on fieldear blocks of that frontend, or choose the other with --frontend small|backbone",
    )


def _with_plain_input(model, params, channel: bool):
    """A model taking (block_frames, n_mels): the bundle's input shape; adds a channel axis if needed."""
    from convert.tf_quiet import load_keras

    keras = load_keras()

    if not channel:
        return model
    inputs = keras.Input(shape=(params.block_frames, params.n_mels), name="logmel")
    x = keras.layers.Reshape((params.block_frames, params.n_mels, 1))(inputs)
    return keras.Model(inputs, model(x), name=f"{model.name}_fieldear")


def model_labels(options: ConvertOptions, dataset, n_out: int) -> list[str]:
    """The model's output labels (--labels, else the data's), checked against the model and the data."""
    labels = list(options.labels) if options.labels else list(dataset.labels)
    if len(set(labels)) != len(labels) or not all(labels):
        raise FieldearError(f"--labels must be distinct, non-empty names (got {','.join(labels)})")
    if n_out != len(labels):
        raise BundleError(f"the model has {n_out} outputs but there are {len(labels)} labels ({', '.join(labels)})",
                          "pass --labels A,B,... naming each output in order")
    stray = sorted(set(dataset.labels) - set(labels))
    if stray:
        raise FieldearError(f"the data has labels the model does not know: {', '.join(stray)}",
                            f"the model's labels are {', '.join(labels)}; remove those clips or fix --labels")
    return labels


def clip_scores(plain, flat: bytes, blocks: list[np.ndarray], pooling: str, n_labels: int):
    """(float, int8) clip scores of every clip: the Keras model and the quantized one (runtime interpreter)."""
    from convert.quantize import keras_predict
    from runtime.model.interpreter import Runner
    from runtime.model.model import pool_scores

    runner = Runner(flat)
    float_scores = np.stack([pool_scores(keras_predict(plain, b), pooling, n_labels) for b in blocks])
    int8_scores = np.stack([pool_scores(runner.run(b), pooling, n_labels) for b in blocks])
    return float_scores, int8_scores


def report_result(options: ConvertOptions, dataset, labels, y, int8_scores, model, size: int, parity) -> dict:
    source = f"keras:{Path(options.model).name}"
    return {
        "name": options.name or Path(options.out).name,
        "fieldear_version": fieldear_version(),
        "labels": labels,
        "dataset": dataset_summary(dataset),
        "cv": {"scheme": "no cross-validation: the converted model scored on every clip of --data (optimistic if it "
                         "was trained on them); scores of the int8 model",
               "y_true": [labels[i] for i in y], "y_pred": [labels[i] for i in int8_scores.argmax(axis=1)],
               "scores": int8_scores.round(5).tolist()},
        "candidates": [{"name": source, "note": "converted, not trained by fieldear"}],
        "choice": {"name": source, "why": "given by the user (fieldear convert)"},
        "model": {"size_bytes": size, "params": int(model.count_params()), "files": {"classifier.tflite": size},
                  "frontend": options.frontend, "clip_pooling": options.pooling},
        "quantization": parity,
    }


def convert_keras(options: ConvertOptions) -> dict:
    from convert.data.dataset import load_dataset
    from convert.families.base import stage_entry
    from convert.families.embed import dataset_blocks
    from convert.quantize import quantize_int8, representative_sample
    from runtime.model.bundle import POOLINGS
    from runtime.model.interpreter import Runner

    t0 = time.monotonic()
    out = check_out(options.out, options.force)
    if options.pooling not in POOLINGS:
        raise FieldearError(f"unknown pooling {options.pooling!r}", "choose mean or max")
    params = frontend_params(options.frontend)
    model = load_keras_model(options.model)
    channel = check_input_shape(model, params, options.frontend)
    dataset = load_dataset(options.data)
    labels = model_labels(options, dataset, model.outputs[0].shape[-1])
    y = np.array([labels.index(c.label) for c in dataset.items], dtype=np.int64)

    blocks = dataset_blocks(dataset.items, params)
    plain = _with_plain_input(model, params, channel)
    flat = quantize_int8(plain, representative_sample(np.concatenate([b for b in blocks if len(b)]), options.seed))
    float_scores, int8_scores = clip_scores(plain, flat, blocks, options.pooling, len(labels))
    parity = int8_parity([labels[i] for i in y], float_scores, int8_scores, labels,
                         "every clip of --data (the model may have been trained on them)", options.strict)

    result = report_result(options, dataset, labels, y, int8_scores, model, len(flat), parity)
    computed, thresholds = thresholds_from_oof(result)
    result["train_seconds"] = round(time.monotonic() - t0, 1)
    metrics = {"scheme": result["cv"]["scheme"], "accuracy": computed["report"]["accuracy"],
               "macro_f1": computed["report"]["macro"]["f1"], "quantization": parity,
               "source_model": Path(options.model).name}
    stages = [stage_entry("classifier.tflite", "classifier", Runner(flat))]
    meta = model_meta(result["name"], labels, params, stages, options.pooling, thresholds, metrics, dataset)
    bundle = publish_bundle(out, {"classifier.tflite": flat}, meta, result, force=options.force)
    return {"bundle": str(out), "sha256": bundle.sha256, "result": result, "meta": meta}
