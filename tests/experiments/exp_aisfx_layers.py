"""Experiment for issue 15: do pooled intermediate activations of the int8 aisfx backbone, fused with its 512-d
block embedding, beat the embedding alone?

* The committed int8 TFLite (``runtime.paths.BACKBONE_FILE``) is run with ai-edge-litert's
  ``Interpreter(experimental_preserve_all_tensors=True)``; each conv block's output is read after ``invoke``:
  ``b1``-``b3`` = the block's max-pool output (50x48x64, 25x24x128, 12x12x256), ``b4`` = its second conv
  (12x12x512, the tensor the embedding is reduced from); each tensor is dequantised with its scale / zero point and
  pooled over time and frequency into [mean, max] (2 x channels values).
* The embedding itself comes from ``convert.families.embed.dataset_embeddings`` (the cache train uses), the
  pooled activations from the same blocks (``clip_blocks`` with the ``BACKBONE`` frontend); the run checks that the
  preserved output tensor equals the cached embedding.
* Protocol: ``exp_embscout.nested_eval`` (outer leave-one-fold-out; per block a standardised logistic regression,
  clip = mean of its blocks' probabilities; C in ``exp_embscout.C_GRID`` chosen by leave-one-fold-out on the
  training folds only), each variant scored on its own (no choice among variants).
* Sets: ``esc10`` (official folds), and the design sets of ``exp_acc_design``: ``fsdd`` (folds by speaker) and
  ``fsdd_events`` (digits in 5 s of forest_24h at 20-35 dB SNR, folds by speaker).

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 nice -n 10 python -m tests.experiments.exp_aisfx_layers \\
        [--out DIR] [--sets esc10,fsdd,fsdd_events] [--variants emb,emb+b3,emb+b2+b3,emb+b1+b2+b3,emb+b1+b2+b3+b4]

Writes ``aisfx_layers.json``. Experiment only: nothing here is used by ``convert`` or ``runtime``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from tests.experiments.exp_embscout import nested_eval

log = logging.getLogger("bench.aisfx_layers")

BLOCKS = ("b1", "b2", "b3", "b4")
VARIANTS = ("emb", "emb+b3", "emb+b2+b3", "emb+b1+b2+b3", "emb+b1+b2+b3+b4")
SETS = ("esc10", "fsdd", "fsdd_events")


class LayerTaps:
    """The int8 backbone with every tensor kept: each block's output, dequantised, pooled to [mean, max]."""

    def __init__(self, model_path, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_path=str(model_path), experimental_preserve_all_tensors=True,
                                  num_threads=threads)
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]
        acts = [d for d in self.interp.get_tensor_details() if len(d["shape"]) == 4 and d["shape"][0] == 1]
        # per block the last activation (batch 1, H, W, C) whose name carries its prefix: b1-b3 their max pool,
        # b4 its second conv (the graph has no b4 pool)
        self.taps = {b: max((d for d in acts if f"/{b}_" in d["name"]), key=lambda d: d["index"]) for b in BLOCKS}
        for b, d in self.taps.items():
            log.info("tap %s: tensor %d %s %s", b, d["index"], d["name"].split(";")[0], tuple(d["shape"]))

    @staticmethod
    def _dequantise(q: np.ndarray, detail: dict) -> np.ndarray:
        scale, zero = detail["quantization"]
        return (q.astype(np.float32) - zero) * scale

    def run(self, blocks: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Blocks (n, frames, mels) -> (the output embedding (n, 512), {block: (n, 2 * channels)})."""
        scale, zero = self.input["quantization"]
        info = np.iinfo(self.input["dtype"])
        emb, pooled = [], {b: [] for b in BLOCKS}
        for x in blocks:
            q = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self.input["dtype"])
            self.interp.set_tensor(self.input["index"], q.reshape(self.input["shape"]))
            self.interp.invoke()
            emb.append(self._dequantise(self.interp.get_tensor(self.output["index"]), self.output)[0])
            for b, d in self.taps.items():
                a = self._dequantise(self.interp.get_tensor(d["index"]), d)[0]
                pooled[b].append(np.concatenate([a.mean(axis=(0, 1)), a.max(axis=(0, 1))]))
        dims = {b: 2 * int(d["shape"][-1]) for b, d in self.taps.items()}
        return (np.asarray(emb, dtype=np.float32).reshape(len(blocks), -1),
                {b: np.asarray(v, dtype=np.float32).reshape(len(blocks), dims[b]) for b, v in pooled.items()})


def manifest(name: str, work: Path) -> Path:
    from tests.bench.bench_train import esc10_labels, esc10_manifest
    from tests.experiments.exp_acc_design import MANIFESTS

    if name == "esc10":
        return esc10_manifest(work / "esc10.csv", {label: None for label in esc10_labels()}, folds=True)
    return MANIFESTS[name](work / f"{name}.csv")


def run_set(name: str, work: Path, variants: tuple[str, ...]) -> dict:
    from convert.data.dataset import load_dataset
    from convert.families.embed import clip_blocks, dataset_embeddings
    from runtime.features.frontend import BACKBONE
    from runtime.paths import BACKBONE_FILE

    clips = load_dataset(manifest(name, work)).items
    labels = sorted({c.label for c in clips})
    y = np.array([labels.index(c.label) for c in clips])
    folds = np.array([str(c.fold) for c in clips])
    emb = dataset_embeddings(clips, threads=1)
    taps = LayerTaps(BACKBONE_FILE, threads=1)
    t0 = time.perf_counter()
    feats = {b: [] for b in BLOCKS}
    max_diff = 0.0
    for clip, e in zip(clips, emb):
        out, pooled = taps.run(clip_blocks(clip.path, BACKBONE))
        if out.shape != e.shape:
            raise RuntimeError(f"{clip.path}: {out.shape} blocks tapped, {e.shape} cached")
        max_diff = max(max_diff, float(np.abs(out - e).max(initial=0.0)))
        for b in BLOCKS:
            feats[b].append(pooled[b])
    tap_s = time.perf_counter() - t0
    log.info("%s: tapped %d clips in %.1f s; max |tapped output - cached embedding| = %.4g",
             name, len(clips), tap_s, max_diff)
    res: dict = {"n_clips": len(clips), "n_blocks": int(sum(len(e) for e in emb)), "n_labels": len(labels),
                 "folds": sorted(set(folds)), "tap_seconds": round(tap_s, 1),
                 "max_abs_diff_tapped_vs_cached_embedding": round(max_diff, 6)}
    for variant in variants:
        parts = variant.split("+")
        x = [np.concatenate([e if p == "emb" else feats[p][i] for p in parts], axis=1) for i, e in enumerate(emb)]
        t0 = time.perf_counter()
        r = nested_eval({variant: x}, y, folds)
        res[variant] = {"dim": int(x[0].shape[1]), "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
                        "C_per_fold": [c["C"] for c in r["chosen_per_fold"].values()],
                        "seconds": round(time.perf_counter() - t0, 1)}
        log.info("%s %s: %s", name, variant, res[variant])
    return res


def main(out_dir: Path, sets: tuple[str, ...], variants: tuple[str, ...] = VARIANTS) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "aisfx_layers.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for name in sets:  # each set is written as soon as it is done
        results[name] = run_set(name, out_dir, variants)
        path.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/aisfx_layers"))
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    res = main(args.out, tuple(s.strip() for s in args.sets.split(",") if s.strip()),
               tuple(v.strip() for v in args.variants.split(",") if v.strip()))
    print(json.dumps(res, indent=1))
