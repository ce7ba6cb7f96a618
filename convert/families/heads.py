"""Small classifier heads on backbone embeddings, and their export to Keras.

A head is fitted on per-block embeddings, every block carrying its clip's label (scikit-learn, fast
enough to cross-validate in seconds). Blocks of none of the labels (negatives, site background, quiet
blocks) carry the extra class index ``n_labels``: the *background* output, trained like any other and
never reported — its softmax share is what lets every label's score be low ("nothing known"). The fitted
head is exported as a Keras model whose first Dense layer has the standardization folded into its
weights and whose last layer is a softmax over the labels and background, followed by a slice that keeps
the labels' columns, so that the exported model computes exactly what the scikit-learn pipeline computes.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadSpec:
    """``kind`` "logreg" (multinomial logistic regression), "mlp" (one ReLU hidden layer) or "ensemble" (the
    mean of the probabilities of the heads ``members``, each fitted on the same blocks)."""

    kind: str = "logreg"
    c: float = 1.0  # inverse L2 strength for logreg
    hidden: int = 128  # mlp hidden units
    alpha: float = 1e-2  # mlp L2 strength
    max_iter: int = 300
    members: tuple["HeadSpec", ...] = ()  # ensemble only

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HeadSpec":
        """The spec ``to_dict`` wrote (model.json's training setting)."""
        d = dict(d)
        d["members"] = tuple(cls.from_dict(m) for m in d.get("members") or ())
        return cls(**d)

    @property
    def name(self) -> str:
        if self.kind == "logreg":
            return f"logreg(C={self.c:g})"
        if self.kind == "ensemble":
            return "ensemble(" + " + ".join(m.name for m in self.members) + ")"
        return f"mlp({self.hidden}, alpha={self.alpha:g})"


@dataclass
class FittedHead:
    spec: HeadSpec
    n_labels: int
    mean: np.ndarray  # (dim,)
    scale: np.ndarray  # (dim,)
    estimator: object  # fitted sklearn classifier on standardized inputs
    classes: np.ndarray  # class indices the estimator knows (a fold may miss a label; n_labels = background)

    @property
    def n_outputs(self) -> int:
        """Softmax width: the labels, plus the background class when the head was trained with one."""
        return self.n_labels + int(self.background)

    @property
    def background(self) -> bool:
        return bool((self.classes == self.n_labels).any())

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Block probabilities of the labels (n, n_labels), the background's share left out; labels unseen in
        training get 0."""
        from threadpoolctl import threadpool_limits

        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        with threadpool_limits(1):
            p = self.estimator.predict_proba(z)
        out = np.zeros((len(x), self.n_outputs), dtype=np.float32)
        out[:, self.classes] = p
        return out[:, :self.n_labels]

    def dense_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(W, b), ...] on raw (unstandardized) inputs; ReLU between layers, softmax after the last.

        Output columns follow class indices 0..n_outputs-1 (the background last); a label unseen in
        training gets a very negative bias (probability ~0).
        """
        est = self.estimator
        if self.spec.kind == "logreg":
            coefs, intercepts = [est.coef_.T], [est.intercept_]
            if coefs[0].shape[1] == 1:  # binary: sklearn keeps one logit column; softmax needs two
                w = coefs[0][:, 0]
                coefs = [np.stack([-w / 2, w / 2], axis=1)]
                intercepts = [np.array([-intercepts[0][0] / 2, intercepts[0][0] / 2])]
        else:
            coefs, intercepts = list(est.coefs_), list(est.intercepts_)
            if coefs[-1].shape[1] == 1:  # binary MLP: logistic output -> two softmax logits
                w, b = coefs[-1][:, 0], intercepts[-1][0]
                coefs[-1] = np.stack([-w / 2, w / 2], axis=1)
                intercepts[-1] = np.array([-b / 2, b / 2])
        # fold the standardization into the first layer: (x - m)/s @ W + b = x @ (W/s) + (b - (m/s) @ W)
        w0, b0 = coefs[0], intercepts[0]
        coefs[0] = w0 / self.scale[:, None]
        intercepts[0] = b0 - (self.mean / self.scale) @ w0
        # place the output columns at their label indices
        w_last, b_last = coefs[-1], intercepts[-1]
        full_w = np.zeros((w_last.shape[0], self.n_outputs))
        full_b = np.full(self.n_outputs, -30.0)
        full_w[:, self.classes] = w_last
        full_b[self.classes] = b_last
        coefs[-1], intercepts[-1] = full_w, full_b
        return [(w.astype(np.float32), b.astype(np.float32)) for w, b in zip(coefs, intercepts)]

    @property
    def n_params(self) -> int:
        return int(sum(w.size + b.size for w, b in self.dense_layers()))


@dataclass
class HeadEnsemble:
    """Heads fitted on the same blocks whose block probabilities are averaged (one head stage on the device)."""

    spec: HeadSpec
    members: list[FittedHead]

    @property
    def n_labels(self) -> int:
        return self.members[0].n_labels

    @property
    def background(self) -> bool:
        return self.members[0].background

    @property
    def dim(self) -> int:
        return self.members[0].dim

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.mean([m.predict_proba(x) for m in self.members], axis=0).astype(np.float32)

    @property
    def n_params(self) -> int:
        return int(sum(m.n_params for m in self.members))


def fit_head(x: np.ndarray, y: np.ndarray, n_labels: int, spec: HeadSpec, seed: int,
             sample_weight: np.ndarray | None = None) -> FittedHead | HeadEnsemble:
    """Fit a head on block embeddings ``x`` (n, dim) with class indices ``y`` (n,): label indices, or
    ``n_labels`` for a block of none of the labels (the background class).

    ``sample_weight`` (n,) weighs the rows, also in the standardization statistics (a row entered once per
    label with weight 1/n_labels counts as one row), and in the fit itself (scikit-learn >= 1.7 weighs MLP
    training too).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    if spec.kind == "ensemble":
        return HeadEnsemble(spec, [fit_head(x, y, n_labels, m, seed, sample_weight) for m in spec.members])
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    mean = np.average(x, axis=0, weights=w)
    scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    scale = np.where(scale > 1e-6, scale, 1.0)
    z = (x - mean) / scale
    if spec.kind == "logreg":
        est = LogisticRegression(C=spec.c, max_iter=spec.max_iter, random_state=seed)
    elif spec.kind == "mlp":
        est = MLPClassifier(hidden_layer_sizes=(spec.hidden,), alpha=spec.alpha, max_iter=spec.max_iter,
                            random_state=seed, early_stopping=False)
    else:
        raise ValueError(f"unknown head kind {spec.kind!r}")
    # one BLAS thread: these problems are small, and threads oversubscribe a busy 2-core machine (5x slower)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(z, y, sample_weight=w)
    return FittedHead(spec=spec, n_labels=n_labels, mean=mean, scale=scale, estimator=est,
                      classes=np.asarray(est.classes_, dtype=np.int64))


def head_to_keras(head: FittedHead | HeadEnsemble):
    """The head as a float Keras model: (dim,) embedding -> (n_labels,) probabilities (the softmax over labels and
    background, the background's column sliced off); an ensemble's members side by side, their softmaxes averaged."""
    from convert.tf_quiet import load_keras

    keras = load_keras()

    members = head.members if isinstance(head, HeadEnsemble) else [head]
    inputs = keras.Input(shape=(head.dim,), name="embedding")
    outputs = []
    for j, member in enumerate(members):
        layers = member.dense_layers()
        prefix = f"m{j}_" if len(members) > 1 else ""
        x = inputs
        for i, (w, b) in enumerate(layers):
            last = i == len(layers) - 1
            dense = keras.layers.Dense(w.shape[1], activation="softmax" if last else "relu", name=f"{prefix}dense_{i}")
            x = dense(x)
            dense.set_weights([w, b])
        outputs.append(x)
    x = keras.layers.Average(name="mean")(outputs) if len(outputs) > 1 else outputs[0]
    if head.background:
        x = keras.layers.Lambda(lambda t: t[:, :head.n_labels], name="labels_only")(x)
    return keras.Model(inputs, x, name=f"head_{head.spec.kind}")
