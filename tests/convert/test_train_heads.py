"""Heads: the exported Keras/TFLite head computes what the fitted scikit-learn head computes."""

from __future__ import annotations

import numpy as np
import pytest

from convert.families.heads import HeadSpec, fit_head

pytestmark = pytest.mark.train


def _blobs(n_labels: int, seed: int = 0, dim: int = 32, per: int = 40):
    """Non-negative, embedding-like features with label-dependent means (like ReLU-max embeddings)."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.2, 2.0, size=(n_labels, dim))
    x = np.concatenate([np.abs(c + 0.6 * rng.normal(size=(per, dim))) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(n_labels), per)
    return x, y


@pytest.mark.parametrize("spec,n_labels", [
    (HeadSpec("logreg", c=0.1), 4),
    (HeadSpec("logreg", c=0.1), 2),
    (HeadSpec("mlp", hidden=16, alpha=1e-2, max_iter=200), 3),
    (HeadSpec("mlp", hidden=16, alpha=1e-2, max_iter=200), 2),
])
def test_dense_export_matches_sklearn(spec, n_labels):
    x, y = _blobs(n_labels)
    head = fit_head(x, y, n_labels, spec, seed=0)
    want = head.predict_proba(x)
    h = x.astype(np.float64)
    layers = head.dense_layers()
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    h = np.exp(h - h.max(axis=1, keepdims=True))
    got = h / h.sum(axis=1, keepdims=True)
    assert np.abs(got - want).max() < 1e-4
    assert (want.argmax(1) == y).mean() > 0.9  # the blobs are separable: a broken fit fails here


def test_label_missing_from_training_gets_zero_probability():
    x, y = _blobs(3)
    keep = y != 1
    head = fit_head(x[keep], y[keep], 3, HeadSpec("logreg", c=0.1), seed=0)
    p = head.predict_proba(x)
    assert p.shape == (len(x), 3) and np.all(p[:, 1] == 0)
    w, b = head.dense_layers()[-1]
    assert w.shape[1] == 3 and b[1] < -20


def test_int8_head_agrees_with_float_and_keeps_the_backbone_input_quantization():
    from convert.families.heads import head_to_keras
    from convert.quantize import keras_predict, quantize_int8
    from runtime.model.interpreter import Runner

    x, y = _blobs(4, dim=64)
    head = fit_head(x, y, 4, HeadSpec("logreg", c=0.1), seed=0)
    model = head_to_keras(head)
    assert np.abs(keras_predict(model, x) - head.predict_proba(x)).max() < 1e-4
    scale, zero_point = 0.0213, -128  # like the backbone's output: [0, 5.43]
    lo, hi = (-128 - zero_point) * scale, (127 - zero_point) * scale
    flat = quantize_int8(model, x, input_range=(lo, hi))
    spec = Runner(flat).input_spec
    assert spec["dtype"] == "int8" and spec["zero_point"] == zero_point
    assert abs(spec["scale"] - scale) / scale < 0.01
    q = Runner(flat).run(x)
    assert (q.argmax(1) == head.predict_proba(x).argmax(1)).mean() >= 0.97
    assert np.abs(q - head.predict_proba(x)).max() < 0.1


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_rows_entered_once_per_label_with_weight_one_over_n_are_trained_towards_equal_scores(kind):
    """The quiet-block rule of convert.train: such rows pull their region of the input towards 1/n_labels,
    and they count as one row in the standardization statistics."""
    x, y = _blobs(3, dim=16)
    rng = np.random.default_rng(1)
    quiet = np.abs(rng.normal(size=(30, 16)) * 0.05).astype(np.float32) + 5.0  # far from every blob
    xs = np.concatenate([x] + [quiet] * 3)
    ys = np.concatenate([y] + [np.full(len(quiet), k) for k in range(3)])
    ws = np.concatenate([np.ones(len(x)), np.full(3 * len(quiet), 1 / 3)])
    spec = HeadSpec("logreg", c=0.1) if kind == "logreg" else HeadSpec("mlp", hidden=16, alpha=1e-2, max_iter=300)
    head = fit_head(xs, ys, 3, spec, seed=0, sample_weight=ws)
    p = head.predict_proba(quiet)
    assert np.abs(p - 1 / 3).max() < 0.15
    assert (head.predict_proba(x).argmax(1) == y).mean() > 0.9
    once = np.concatenate([x, quiet])
    assert np.allclose(head.mean, once.mean(axis=0), atol=1e-4)


def test_ensemble_is_the_mean_of_its_members_and_exports_as_one_model():
    from convert.families.heads import HeadEnsemble, head_to_keras
    from convert.quantize import keras_predict

    x, y = _blobs(3, dim=16)
    members = (HeadSpec("logreg", c=0.1), HeadSpec("mlp", hidden=16, alpha=1e-2, max_iter=300))
    spec = HeadSpec("ensemble", members=members)
    ens = fit_head(x, y, 3, spec, seed=0)
    assert isinstance(ens, HeadEnsemble) and [m.spec for m in ens.members] == list(members)
    alone = [fit_head(x, y, 3, m, seed=0).predict_proba(x) for m in members]
    assert np.abs(ens.predict_proba(x) - np.mean(alone, axis=0)).max() < 1e-6
    assert np.abs(alone[0] - alone[1]).max() > 1e-3  # the members differ, so the mean is not either one
    assert np.abs(keras_predict(head_to_keras(ens), x) - ens.predict_proba(x)).max() < 1e-4
    assert ens.n_params == sum(fit_head(x, y, 3, m, seed=0).n_params for m in members)
