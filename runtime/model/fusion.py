"""Fused embeddings of one raw window (a bundle whose model.json has ``"fusion": "birdnet+aisfx"``).

Stages: [raw-window embedding (BirdNET), aisfx backbone embedding, classifier]. The classifier's input is the first
embedding beside the aisfx backbone's embedding of the window's centre: the window resampled to 44.1 kHz by the
project's resampler, its log-mel (``runtime.features.frontend.BACKBONE``) and the 100 frames around its middle.
Training (convert/families/birdnet.py) calls the same ``centre_block``, so the device sees the blocks it was
trained on.
"""

from __future__ import annotations

import numpy as np

FUSIONS = ("birdnet+aisfx",)


def centre_block(window: np.ndarray, in_rate: int) -> np.ndarray:
    """The aisfx backbone's input block (block_frames, n_mels) at the centre of a raw window (samples at in_rate);
    a window shorter than one block is zero-padded at the end, as BlockAssembler pads a short clip."""
    from runtime.audio.resample import resample
    from runtime.features.frontend import BACKBONE, logmel

    x = np.asarray(window, dtype=np.float32).reshape(-1)
    if in_rate != BACKBONE.sample_rate:
        x = resample(x, in_rate, BACKBONE.sample_rate).astype(np.float32, copy=False)
    mel = logmel(x, BACKBONE)
    n = BACKBONE.block_frames
    start = max(0, (len(mel) - n) // 2)
    block = np.zeros((n, BACKBONE.n_mels), dtype=np.float32)
    part = mel[start : start + n]
    block[: len(part)] = part
    return block


def fused_embedding(runners, window: np.ndarray, in_rate: int) -> np.ndarray:
    """[first stage's embedding of the window, aisfx's of its centre block]: the classifier stage's input."""
    return np.concatenate([runners[0].run_one(window), runners[1].run_one(centre_block(window, in_rate))])
