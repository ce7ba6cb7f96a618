"""A small CNN trained from scratch on ``runtime.features.frontend.SMALL`` log-mel blocks (62 x 64).

About 60k parameters, int8-friendly (conv, batch-norm folded by the converter, ReLU, max-pool,
global average pool, dense, softmax). Two details matter on small data (measured before):
BatchNorm momentum 0.9 (Keras' default 0.99 with ~20 steps per epoch left the moving statistics
near their initial values, and early stopping then restored near-untrained weights), and no
early-stopping restore before epoch 5.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from convert.families.base import (
    Budget,
    OverBudget,
    Trial,
    calibration_blocks,
    estimated_blocks,
    log_fold,
    log_trials,
    pooled_trials,
    stage_entry,
)
from convert.options import TrainOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CnnSpec:
    filters: tuple[int, ...] = (16, 32, 64, 64)
    dense: int = 64
    dropout: float = 0.3
    epochs: int = 40
    patience: int = 8
    start_from_epoch: int = 5
    batch_size: int = 32
    learning_rate: float = 2e-3
    bn_momentum: float = 0.9
    val_fraction: float = 0.15  # clips held out of the training clips for early stopping


def build_cnn(input_shape: tuple[int, int], n_labels: int, spec: CnnSpec, seed: int):
    """(block_frames, n_mels) -> (n_labels,) softmax."""
    from convert.tf_quiet import load_keras

    keras = load_keras()

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=tuple(input_shape), name="logmel")
    x = keras.layers.Reshape(tuple(input_shape) + (1,))(inputs)
    for i, f in enumerate(spec.filters):
        x = keras.layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=spec.bn_momentum, name=f"bn{i}")(x)
        x = keras.layers.ReLU()(x)
        if i < len(spec.filters) - 1:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(spec.dropout, seed=seed)(x)
    x = keras.layers.Dense(spec.dense, activation="relu")(x)
    x = keras.layers.Dense(n_labels, activation="softmax", name="scores")(x)
    return keras.Model(inputs, x, name="fieldear_small_cnn")


def _split_clips(clip_ids: np.ndarray, y_clip: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over clips: True = early-stopping validation clip (stratified, >= 1 kept per label)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(clip_ids), dtype=bool)
    for label in np.unique(y_clip):
        idx = np.flatnonzero(y_clip == label)
        k = int(round(fraction * len(idx)))
        if len(idx) - k < 1:
            k = len(idx) - 1
        if k > 0:
            mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


def fit_cnn(blocks: list[np.ndarray], y_clip: np.ndarray, n_labels: int, spec: CnnSpec, seed: int):
    """Train on the blocks of some clips (list of (n_blocks, frames, mels)), each block with its clip's label.

    Early stopping watches held-out training clips (never the CV validation fold).
    Returns (keras model, info dict).
    """
    from convert.tf_quiet import load_keras

    keras = load_keras()

    y_clip = np.asarray(y_clip, dtype=np.int64)
    val_mask = _split_clips(np.arange(len(blocks)), y_clip, spec.val_fraction, seed)
    if val_mask.sum() == 0:
        val_mask[:] = False

    def stack(mask):
        xs = [b for b, m in zip(blocks, mask) if m and len(b)]
        ys = [np.full(len(b), c) for b, c, m in zip(blocks, y_clip, mask) if m and len(b)]
        if not xs:
            return None, None
        return np.concatenate(xs), np.concatenate(ys)

    x_tr, y_tr = stack(~val_mask)
    x_va, y_va = stack(val_mask)
    model = build_cnn(x_tr.shape[1:], n_labels, spec, seed)
    model.compile(optimizer=keras.optimizers.Adam(spec.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = []
    if x_va is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=spec.patience,
                                                       restore_best_weights=True,
                                                       start_from_epoch=spec.start_from_epoch))
    t0 = time.monotonic()
    hist = model.fit(x_tr, y_tr, validation_data=(x_va, y_va) if x_va is not None else None,
                     epochs=spec.epochs, batch_size=spec.batch_size, shuffle=True, verbose=0,
                     callbacks=callbacks)
    epochs_run = len(hist.history["loss"])
    info = {"epochs": epochs_run, "train_blocks": int(len(x_tr)), "seconds": time.monotonic() - t0,
            "final_loss": float(hist.history["loss"][-1])}
    if x_va is not None:
        info["best_val_loss"] = float(np.min(hist.history["val_loss"][spec.start_from_epoch:] or hist.history["val_loss"]))
    log.info("cnn: %d epochs on %d blocks in %.1f s", epochs_run, len(x_tr), info["seconds"])
    return model, info


def estimate_seconds(n_blocks: int, spec: CnnSpec, seconds_per_block_epoch: float = 2.0e-3) -> float:
    """Rough training time for one fit on this kind of machine (refined after the first fold)."""
    return n_blocks * spec.epochs * seconds_per_block_epoch


CNN_SECONDS_PER_BLOCK_EPOCH = 3.0e-3  # measured on the 2-core dev machine (refined after a fold)


class CnnFamily:
    """Small CNN from scratch on SMALL log-mel blocks."""

    name = "cnn"
    parity_reference = "float = the Keras model before quantization"

    def __init__(self, options: TrainOptions):
        from runtime.features.frontend import SMALL

        self.options = options
        self.params = SMALL
        spec = CnnSpec()
        if options.cnn_epochs:
            spec = replace(spec, epochs=int(options.cnn_epochs), patience=min(spec.patience, int(options.cnn_epochs)))
        self.spec = spec
        self.inputs: list[np.ndarray] | None = None
        self.seconds_per_block_epoch = CNN_SECONDS_PER_BLOCK_EPOCH

    def expected_epochs(self) -> float:
        return min(self.spec.epochs, max(self.spec.start_from_epoch + self.spec.patience, 0.6 * self.spec.epochs))

    def fit_seconds(self, n_blocks: float) -> float:
        return n_blocks * self.expected_epochs() * self.seconds_per_block_epoch + 3.0

    def estimate_seconds(self, dataset, n_folds: int) -> float:
        per_fold = self.fit_seconds(estimated_blocks(dataset, self.params) * (1 - 1 / n_folds) * (1 - self.spec.val_fraction))
        return per_fold * n_folds

    def prepare(self, dataset) -> None:
        from convert.families.embed import dataset_blocks

        self.inputs = dataset_blocks(dataset.items, self.params)

    def device_cost(self, model=None) -> float:
        return 12e6 / self.params.block_hop_seconds

    def cross_validate(self, y, splits, n_labels, seed, budget: Budget | None, labels) -> list[Trial]:
        from convert.quantize import keras_predict

        t0 = time.monotonic()
        block_scores: list[np.ndarray | None] = [None] * len(y)
        models, infos = [], []
        for k, (tr, va) in enumerate(splits):
            log_fold("cnn", k, len(splits))
            model, info = fit_cnn([self.inputs[i] for i in tr], y[tr], n_labels, self.spec, seed + k)
            models.append(model)
            infos.append(info)
            for i in va:
                block_scores[i] = keras_predict(model, self.inputs[i])
            if info["epochs"] and info["train_blocks"]:
                self.seconds_per_block_epoch = info["seconds"] / (info["epochs"] * info["train_blocks"])
            left = len(splits) - k - 1
            if left and budget is not None:
                need = left * (time.monotonic() - t0) / (k + 1)
                if need > budget.remaining:
                    raise OverBudget(f"stopped after fold {k + 1} of {len(splits)}: {need:.0f} s more needed, "
                                      f"{max(0.0, budget.remaining):.0f} s of the time budget left")
        seconds = time.monotonic() - t0
        trials = pooled_trials(block_scores, f"cnn{len(self.spec.filters)}x{self.spec.filters[-1]}", n_labels,
                               family=self.name, setting=self.spec, fold_models=models, seconds=seconds,
                               params=int(models[0].count_params()),
                               size_bytes=int(models[0].count_params()),  # int8 weights, about one byte each
                               device_cost=self.device_cost(), fold_info=infos)
        log_trials("cnn", trials, y, labels, seconds)
        return trials

    def fit(self, idx, y, n_labels, setting, seed):
        model, _ = fit_cnn([self.inputs[i] for i in idx], y[idx], n_labels, setting, seed)
        return model

    def to_tflite(self, model, idx, seed) -> tuple[bytes, object]:
        from convert.quantize import quantize_int8, representative_sample

        x = calibration_blocks(self.inputs, idx)
        return quantize_int8(model, representative_sample(x, seed)), model

    def int8_block_scores(self, runner, i) -> np.ndarray:
        return runner.run(self.inputs[i])

    def bundle_parts(self, flat: bytes) -> tuple[dict, list]:
        from runtime.model.interpreter import Runner

        return {"classifier.tflite": flat}, [stage_entry("classifier.tflite", "classifier", Runner(flat))]

    def training_note(self) -> None:
        """Nothing to add to the report: the CNN trains on its blocks as they are."""
        return None

    def params_count(self, model) -> int:
        return int(model.count_params())
