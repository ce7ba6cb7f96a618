"""Raw audio at any rate -> model blocks, incrementally. The one path shared by predict, batch,
listen and training, so that a block is the same block whichever of them computed it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.audio.resample import StreamResampler
from runtime.features.frontend import BlockAssembler, FrontendParams, streaming_frontend


@dataclass(frozen=True)
class Block:
    index: int  # 0, 1, 2, ... in stream order
    start_frame: int  # first frame of the block (frame i is centred on sample i*hop)
    start_s: float  # stream offset of the block's first frame centre, seconds
    end_s: float  # start_s + block duration
    features: np.ndarray  # (block_frames, n_mels) float32; a raw frontend's: (samples, 1)


class BlockStream:
    """push(raw chunk at in_rate) -> complete Blocks; flush() at end of stream."""

    def __init__(self, params: FrontendParams, in_rate: int):
        self.params = params
        self.in_rate = int(in_rate)
        self.resampler = StreamResampler(self.in_rate, params.sample_rate)
        self.frontend = streaming_frontend(params)
        self.assembler = BlockAssembler(params)
        self.samples_in = 0
        self._count = 0

    def _wrap(self, items) -> list[Block]:
        p = self.params
        out = []
        for start_frame, feats in items:
            start = start_frame * p.hop / p.sample_rate
            out.append(Block(self._count, start_frame, start, start + p.block_seconds, feats))
            self._count += 1
        return out

    def push(self, chunk: np.ndarray) -> list[Block]:
        self.samples_in += len(chunk)
        frames = self.frontend.push(self.resampler.push(chunk))
        return self._wrap(self.assembler.push(frames))

    def flush(self) -> list[Block]:
        tail = self.resampler.flush()
        frames = np.concatenate([self.frontend.push(tail), self.frontend.flush()])
        return self._wrap(self.assembler.push(frames) + self.assembler.flush())

    @property
    def seconds_in(self) -> float:
        return self.samples_in / self.in_rate


class FileBlocks:
    """Iterate over the blocks of an audio file read from disk in chunks (bounded memory, any length).

    After (or during) iteration, ``stream.samples_in`` / ``stream.seconds_in`` say how much audio was read.
    ``gain`` != 1 scales the samples (clipped to [-1, 1]) before the pipeline: level augmentation in training.
    ``skip_seconds`` > 0 drops that much audio from the start: the block grid shifted in time (augmentation in
    training; the device always starts at 0).
    """

    def __init__(self, path, params: FrontendParams, chunk_seconds: float = 10.0, gain: float = 1.0,
                 skip_seconds: float = 0.0):
        from runtime.audio.files import probe

        self.path = path
        self.info = probe(path)
        self.stream = BlockStream(params, self.info.sample_rate)
        self.chunk_seconds = chunk_seconds
        self.gain = float(gain)
        self.skip = int(round(skip_seconds * self.info.sample_rate))

    def __iter__(self):
        from runtime.audio.files import iter_chunks

        skip = self.skip
        for chunk in iter_chunks(self.path, chunk_seconds=self.chunk_seconds):
            if skip:
                cut = min(skip, len(chunk))
                chunk, skip = chunk[cut:], skip - cut
                if not len(chunk):
                    continue
            if self.gain != 1.0:
                chunk = np.clip(chunk * np.float32(self.gain), -1.0, 1.0)
            yield from self.stream.push(chunk)
        yield from self.stream.flush()


def blocks_of(samples: np.ndarray, in_rate: int, params: FrontendParams) -> list[Block]:
    """All blocks of an in-memory clip (same result as streaming it in any chunk sizes)."""
    stream = BlockStream(params, in_rate)
    return stream.push(np.asarray(samples, dtype=np.float32)) + stream.flush()


def stack(blocks: list[Block], params: FrontendParams) -> np.ndarray:
    if not blocks:
        return np.zeros((0, params.block_frames, params.n_mels), dtype=np.float32)
    return np.stack([b.features for b in blocks])
