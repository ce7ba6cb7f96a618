"""Per-block inputs for training: log-mel blocks and backbone embeddings, computed by device code.

Blocks come from ``runtime.pipeline.BlockStream`` on audio decoded by ``runtime.audio`` (the same
path predict and listen use), so the model is trained on exactly the blocks it will see on the
device. Embeddings are computed by the very int8 TFLite backbone the Pi runs, and cached on disk
keyed by (clip sha, frontend parameters, backbone sha): a second training run on the same data only
pays for the head.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from runtime.features.frontend import FrontendParams
from runtime.features.pipeline import FileBlocks
from runtime.model.bundle import sha256_file
from runtime.paths import BACKBONE_FILE

log = logging.getLogger(__name__)

# Decode long recordings in chunks of this many seconds (bounded memory for hour-long files).
CHUNK_SECONDS = 30.0


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "fieldear"


def iter_clip_blocks(path: str | os.PathLike, params: FrontendParams, gain: float = 1.0, skip_seconds: float = 0.0):
    """Yield the model blocks (block_frames, n_mels) of one recording, reading it chunk by chunk.

    ``gain`` != 1 scales the samples (clipped to [-1, 1]) first: level augmentation for training.
    ``skip_seconds`` drops the recording's start first: its blocks on a shifted grid (time-shift augmentation).
    """
    for block in FileBlocks(path, params, CHUNK_SECONDS, gain=gain, skip_seconds=skip_seconds):
        yield block.features


def clip_blocks(path: str | os.PathLike, params: FrontendParams, gain: float = 1.0,
                skip_seconds: float = 0.0) -> np.ndarray:
    """All blocks of one recording, (n_blocks, block_frames, n_mels) float32."""
    blocks = list(iter_clip_blocks(path, params, gain, skip_seconds))
    if not blocks:
        return np.zeros((0, params.block_frames, params.n_mels), dtype=np.float32)
    return np.stack(blocks).astype(np.float32, copy=False)


def block_levels_db(blocks: np.ndarray, params: FrontendParams) -> np.ndarray:
    """Level of each log-mel block (n, block_frames, n_mels) in dB: mean mel power, log compression undone (a raw
    frontend's blocks: mean sample power).

    Training only (which blocks of a clip are much quieter than its loudest); the device never needs it.
    """
    if len(blocks) == 0:
        return np.zeros(0, dtype=np.float32)
    if params.kind == "raw":  # blocks of samples: their mean power
        power = np.square(np.asarray(blocks, dtype=np.float64)).mean(axis=(1, 2))
        return (10.0 * np.log10(power + 1e-12)).astype(np.float32)
    lm = np.asarray(blocks, dtype=np.float64)
    power = (np.power(10.0, lm * params.log_div) - 1.0) / params.log_mult
    return (10.0 * np.log10(power.mean(axis=(1, 2)) + 1e-12)).astype(np.float32)


def dataset_blocks(clips, params: FrontendParams, progress_every: float = 10.0) -> list[np.ndarray]:
    """Blocks of every clip (list aligned with ``clips``; each item has a ``path``)."""
    out = []
    t0 = last = time.monotonic()
    for i, clip in enumerate(clips):
        out.append(clip_blocks(clip.path, params))
        now = time.monotonic()
        if now - last >= progress_every:
            log.info("log-mel blocks: %d/%d clips (%.0f s)", i + 1, len(clips), now - t0)
            last = now
    log.info("log-mel blocks: %d clips, %d blocks (%.1f s)", len(clips), sum(len(b) for b in out), time.monotonic() - t0)
    return out


class EmbeddingCache:
    """Embeddings of one clip as a .npy file under ``root/embeddings``, written atomically."""

    def __init__(self, root: str | os.PathLike | None, params: FrontendParams, backbone_sha: str, gain: float = 1.0,
                 kind: str = "", skip_seconds: float = 0.0):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.dir = self.root / "embeddings"
        self.params_key = json.dumps(params.to_dict(), sort_keys=True)
        self.backbone_sha = backbone_sha
        self.variant_key = (("" if gain == 1.0 else f"|gain={gain!r}") + (f"|{kind}" if kind else "")
                            + (f"|skip={skip_seconds!r}" if skip_seconds else ""))

    def key(self, clip_sha: str) -> str:
        text = f"{clip_sha}|{self.params_key}|{self.backbone_sha}{self.variant_key}"
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, clip_sha: str) -> Path:
        k = self.key(clip_sha)
        return self.dir / k[:2] / f"{k}.npy"

    def get(self, clip_sha: str) -> np.ndarray | None:
        p = self.path(clip_sha)
        if not p.is_file():
            return None
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("ignoring damaged cache entry %s (%s)", p, exc)
            return None

    def put(self, clip_sha: str, emb: np.ndarray) -> None:
        p = self.path(clip_sha)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=p.parent)
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.asarray(emb, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, p)
        except OSError as exc:  # a read-only or full cache must not stop training
            log.warning("cannot write embedding cache %s (%s)", p, exc)


def dataset_embeddings(clips, backbone_path: str | os.PathLike = BACKBONE_FILE, params: FrontendParams | None = None,
                       cache_dir: str | os.PathLike | None = None, threads: int | None = None,
                       progress_every: float = 10.0, gain: float = 1.0, with_levels: bool = False,
                       skip_seconds: float = 0.0):
    """Backbone embeddings (n_blocks, dim) for every clip (each has ``path`` and ``sha``).

    Computed with ``runtime.model.interpreter.Runner`` on the int8 TFLite backbone, cached on disk.
    ``gain`` scales the audio first (level augmentation; cached separately), ``skip_seconds`` drops the start of
    every clip (time-shift augmentation; cached separately). ``with_levels``: return
    ``(embeddings, levels)``, levels = ``block_levels_db`` of each clip's blocks (cached beside them).
    """
    from runtime.features.frontend import BACKBONE
    from runtime.model.interpreter import Runner

    params = params or BACKBONE
    backbone_path = Path(backbone_path)
    backbone_sha = sha256_file(backbone_path)
    cache = EmbeddingCache(cache_dir, params, backbone_sha, gain, skip_seconds=skip_seconds)
    level_cache = EmbeddingCache(cache_dir, params, backbone_sha, gain, kind="levels", skip_seconds=skip_seconds)
    runner = None
    out: list[np.ndarray] = []
    levels: list[np.ndarray] = []
    hits = 0
    what = ("" if gain == 1.0 else f" (gain {20 * np.log10(gain):+.0f} dB)") + (
        f" (start {skip_seconds:.2f} s later)" if skip_seconds else "")
    t0 = last = time.monotonic()
    for i, clip in enumerate(clips):
        emb = cache.get(clip.sha)
        level = level_cache.get(clip.sha) if with_levels else None
        if emb is not None:
            hits += 1
        if emb is None or (with_levels and (level is None or len(level) != len(emb))):
            blocks = clip_blocks(clip.path, params, gain, skip_seconds)
            if emb is None:
                if runner is None:
                    runner = Runner(backbone_path, threads=threads)
                emb = runner.run(blocks).astype(np.float32)
                cache.put(clip.sha, emb)
            if with_levels:
                level = block_levels_db(blocks, params)
                level_cache.put(clip.sha, level)
        out.append(emb)
        levels.append(level)
        now = time.monotonic()
        if now - last >= progress_every:
            log.info("embeddings%s: %d/%d clips (%.0f s)", what, i + 1, len(clips), now - t0)
            last = now
    log.info("embeddings%s: %d clips, %d blocks, %d from cache %s (%.1f s)", what, len(clips),
             sum(len(e) for e in out), hits, cache.dir, time.monotonic() - t0)
    return (out, levels) if with_levels else out
