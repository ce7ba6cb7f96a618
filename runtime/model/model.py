"""A loaded bundle ready to score blocks: the stages run in order, block -> label scores."""

from __future__ import annotations

import logging

import numpy as np

from runtime.errors import BundleError
from runtime.model.bundle import Bundle, load_bundle
from runtime.model.interpreter import Runner

log = logging.getLogger(__name__)

def pool_scores(block_scores: np.ndarray, pooling: str, n_labels: int) -> np.ndarray:
    """Clip scores from block scores (``pooling`` mean or max); zeros for a clip with no blocks.
    The one clip-pooling rule: the device uses it, and training scores its CV clips with it."""
    if len(block_scores) == 0:
        return np.zeros(n_labels, dtype=np.float32)
    return block_scores.max(axis=0) if pooling == "max" else block_scores.mean(axis=0)


class Model:
    def __init__(self, bundle: Bundle, threads: int | None = None, backend: str | None = None):
        self.bundle = bundle
        self.runners: list[Runner] = []
        for stage in bundle.stages:
            runner = Runner(bundle.stage_path(stage), threads=threads, backend=backend)
            for side, got, want in (("input", runner.input_spec, stage.input), ("output", runner.output_spec, stage.output)):
                if got["shape"] != list(want.get("shape", [])) or got["dtype"] != want.get("dtype"):
                    raise BundleError(
                        f"{bundle.path}: {stage.file} {side} is {got['dtype']}{got['shape']}, "
                        f"model.json says {want.get('dtype')}{want.get('shape')}"
                    )
            self.runners.append(runner)
        self.backend_name = self.runners[0].backend_name
        self.fusion = bundle.fusion  # None, or "birdnet+aisfx": runtime.model.fusion
        self._fused_embedding = None
        if self.fusion is not None:
            from runtime.model.fusion import fused_embedding

            self._fused_embedding = fused_embedding
        self.novelty = None
        if bundle.novelty is not None:
            from runtime.model.novelty import load_novelty

            self.novelty = load_novelty(bundle.path / bundle.novelty["file"], bundle.novelty["tau"], bundle.labels)

    @classmethod
    def load(cls, path=None, threads: int | None = None, backend: str | None = None) -> "Model":
        return cls(load_bundle(path), threads=threads, backend=backend)

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels

    @property
    def params(self):
        return self.bundle.frontend

    def score_block(self, block: np.ndarray) -> np.ndarray:
        """One block (block_frames, n_mels) -> scores (n_labels,); with a novelty rule, the labels the block is
        unlike score 0 (runtime.model.novelty). What listen detects events on."""
        return self.score_block_both(block)[1]

    def score_block_both(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the classifier's scores, the same after the novelty rule) of one block; equal without a rule."""
        x = block
        embedding = None
        runners = self.runners
        if self._fused_embedding is not None:  # stages 1 and 2 embed the same window, the rest run on both
            x = embedding = self._fused_embedding(runners, block, self.params.sample_rate)
            runners = runners[2:]
        for k, runner in enumerate(runners):
            x = runner.run_one(x)
            if k == 0 and embedding is None:
                embedding = x
        if self.novelty is None:
            return x, x
        return x, self.novelty.apply(embedding, x[None])[0]

    def score_blocks(self, blocks: np.ndarray) -> np.ndarray:
        """Blocks (n, block_frames, n_mels) -> scores (n, n_labels)."""
        if len(blocks) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.stack([self.score_block(b) for b in blocks])

    def pool(self, block_scores: np.ndarray) -> np.ndarray:
        """Clip scores from block scores, as the bundle says (mean by default)."""
        return pool_scores(block_scores, self.bundle.clip_pooling, len(self.labels))
