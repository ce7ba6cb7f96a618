"""Out-of-distribution rejection: a block unlike every training block of a label cannot be that label.

The bundle carries ``novelty.npz``: the unit-normalised backbone embeddings of the training clips' blocks
(``prototypes``) and the label of each (``proto_label``), and model.json ``novelty.tau`` one similarity per
label. A block's similarity to a label is its largest cosine similarity to that label's prototypes; a label
whose similarity falls below its tau has its score set to 0 (the block is "unknown" to it). ``train``
chooses tau on held-out clips and validation streams; the device computes exactly this, on the int8
backbone's own embeddings (numpy only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import BundleError

NOVELTY_FILE = "novelty.npz"


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


@dataclass(frozen=True)
class Novelty:
    prototypes: np.ndarray  # (m, dim) unit rows
    proto_label: np.ndarray  # (m,) label index of each prototype
    tau: np.ndarray  # (n_labels,) a label's score is kept when its similarity >= tau

    @property
    def n_labels(self) -> int:
        return int(self.tau.shape[0])

    def similarity(self, emb: np.ndarray) -> np.ndarray:
        """(n, dim) embeddings -> (n, n_labels) largest cosine similarity to each label's prototypes
        (-1 for a label without prototypes)."""
        sims = unit_rows(np.atleast_2d(emb)) @ self.prototypes.T  # (n, m)
        out = np.full((sims.shape[0], self.n_labels), -1.0, dtype=np.float32)
        for k in range(self.n_labels):
            cols = self.proto_label == k
            if cols.any():
                out[:, k] = sims[:, cols].max(axis=1)
        return out

    def gate(self, scores: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """Scores with every label whose similarity is below its tau set to 0."""
        return np.where(sims >= self.tau, scores, 0.0).astype(np.float32)

    def apply(self, emb: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return self.gate(scores, self.similarity(emb))


def load_novelty(path: Path, tau: dict, labels: list[str]) -> Novelty:
    """The bundle's novelty file and model.json's per-label tau (checked against the labels)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            protos, proto_label = z["prototypes"], z["proto_label"]
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read the novelty prototypes ({exc})", "copy the whole bundle again") from None
    if protos.ndim != 2 or proto_label.shape != (protos.shape[0],) or (proto_label < 0).any() \
            or (proto_label >= len(labels)).any():
        raise BundleError(f"{path}: novelty prototypes do not match the bundle's {len(labels)} labels")
    if set(tau) != set(labels) or not all(isinstance(v, (int, float)) and -1.0 <= v <= 1.0 for v in tau.values()):
        raise BundleError(f"{path.parent}: model.json novelty.tau must give every label a value in [-1, 1]")
    return Novelty(prototypes=unit_rows(protos), proto_label=proto_label.astype(np.int64),
                   tau=np.array([float(tau[label]) for label in labels], dtype=np.float32))
