"""Training and the device compute identical features: the brief's "one frontend" rule, proven.

The same real recordings go through (a) the training import path (convert.families.embed), (b) the batch /
predict path (runtime.predict.predict reads the file in chunks) and (c) the live path (runtime.audio.sources.FileSource
replayed through runtime.features.pipeline.BlockStream, as `fieldear listen --file` does); the blocks must be
bit-identical, for both model families' frontends.
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime.features.frontend import BACKBONE, SMALL
from runtime.features.pipeline import BlockStream


def _listen_path_blocks(path, params):
    from runtime.audio.sources import FileSource

    with FileSource(path, chunk_seconds=0.37) as src:  # an odd chunk size on purpose
        stream = BlockStream(params, src.sample_rate)
        feats = [b.features for chunk in src.blocks() for b in stream.push(chunk)]
    feats += [b.features for b in stream.flush()]
    return np.stack(feats)


def _predict_path_blocks(path, params):
    from runtime.features.pipeline import (
        FileBlocks,  # what runtime.predict.predict_file iterates
    )

    return np.stack([b.features for b in FileBlocks(path, params, chunk_seconds=10.0)])


@pytest.mark.parametrize("params", [BACKBONE, SMALL], ids=["backbone", "small"])
@pytest.mark.parametrize("rel", ["esc10/dog", "birdsong/great_tit", "fsdd"])
def test_training_and_device_blocks_are_identical(shared_data, params, rel):
    from convert.families.embed import clip_blocks

    folder = shared_data / rel
    path = sorted(p for p in folder.rglob("*.wav"))[0]
    train = clip_blocks(path, params)
    predict = _predict_path_blocks(path, params)
    listen = _listen_path_blocks(path, params)
    assert train.shape[1:] == (params.block_frames, params.n_mels) and len(train) >= 1
    assert np.array_equal(train, predict)
    assert np.array_equal(train, listen)
    assert train.max() > 0.05  # real sound, not an all-zero block


def test_level_augmentation_changes_the_training_blocks(shared_data):
    """convert.families.embed's gain reaches the audio (a regression once made every augmented copy identical)."""
    from convert.families.embed import clip_blocks
    from runtime.audio.files import read_audio
    from runtime.features.pipeline import blocks_of

    path = sorted((shared_data / "esc10" / "dog").glob("*.wav"))[0]
    plain, quieter = clip_blocks(path, BACKBONE), clip_blocks(path, BACKBONE, gain=0.25)
    assert plain.shape == quieter.shape
    assert quieter.mean() < 0.8 * plain.mean()  # -12 dB is a clearly lower log-mel level
    samples, rate = read_audio(path)
    want = blocks_of(np.clip(samples * np.float32(0.25), -1, 1), rate, BACKBONE)
    assert np.array_equal(np.stack([b.features for b in want]), quieter)
