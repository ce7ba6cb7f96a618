"""A small CNN trained from scratch on ``runtime.frontend.SMALL`` log-mel blocks (62 x 64).

About 60k parameters, int8-friendly (conv, batch-norm folded by the converter, ReLU, max-pool,
global average pool, dense, softmax). Two details matter on small data (measured before):
BatchNorm momentum 0.9 (Keras' default 0.99 with ~20 steps per epoch left the moving statistics
near their initial values, and early stopping then restored near-untrained weights), and no
early-stopping restore before epoch 5.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

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
    import keras

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
    import keras

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
