"""Port the pretrained aisfx embedding CNN (Ma & Lerch, ISMIR 2022) to a full-int8 TFLite file.

Run ``python -m convert.tools.backbone_port`` from the project root (``make backbone``). Two steps, two
interpreters, because PyTorch and TensorFlow do not share a venv here:

1. ``--step torch`` (needs torch + aisfx, no TensorFlow): load aisfx's checkpoint, export the
   EmbeddingNet weights (batch-norm parameters raw) to an .npz, cut real blocks from ../shared/data
   with ``runtime.pipeline.blocks_of`` and compute PyTorch fp32 reference embeddings.
2. ``--step tflite`` (needs TensorFlow): build the same network in Keras (NHWC, batch norm folded into
   conv weights + bias), check it against PyTorch, convert it to full int8 with a representative set
   of real blocks, check int8 against PyTorch on held-out blocks and write the committed outputs.

``--step all`` (default) runs step 1 in a subprocess with ``--torch-python`` and then step 2 here.
The device never needs PyTorch or TensorFlow: it only loads the committed .tflite file.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from runtime.audio.files import read_audio
from runtime.errors import DatasetError, FieldearError
from runtime.features.frontend import BACKBONE
from runtime.paths import BACKBONE_FILE

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = ROOT.parent / "shared" / "data"
DEFAULT_WORK = ROOT / "out" / "backbone"
DEFAULT_OUT = BACKBONE_FILE.parent
DEFAULT_REFERENCE = DEFAULT_WORK / "backbone_reference.npz"  # `make backbone` puts it beside its test
TFLITE_NAME = "backbone_int8.tflite"

CHANNELS = (64, 128, 256, 512)  # EmbeddingNet('max', 3, 1, 64)
POOLS = ((2, 2), (2, 2), (2, 2), None)  # block 4 pools (1, 1): no pooling
BN_EPS = 1e-5  # torch.nn.BatchNorm2d default
EMBED_DIM = CHANNELS[-1]

ESC10_CLASSES = ("chainsaw", "clock_tick", "crackling_fire", "crying_baby", "dog",
                 "helicopter", "rain", "rooster", "sea_waves", "sneezing")
TIMING_REPEATS = 20


# ---------------------------------------------------------------- data (both steps)


def _wavs(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise DatasetError(f"no .wav files in {folder}", "clone the project with ../shared/data beside it, or pass --shared")
    return files


def _rms(path: Path) -> float:
    x, _ = read_audio(path)
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


def select_clips(shared: Path) -> list[dict]:
    """Deterministic choice of real clips: role 'rep' (representative set) or 'heldout' (evaluation).

    ESC-10: folds 1-4 feed the representative set (3 clips per class), fold 5 is held out (2 per class).
    Great tit: first 6 songs representative, next 4 held out. Forest 24 h: the 3 quietest recordings
    (night, near-silent) plus 6 spread over the day are representative; the 4th/5th quietest and
    4 others are held out.
    """
    clips = []
    for cls in ESC10_CLASSES:
        files = _wavs(shared / "esc10" / cls)
        train = [f for f in files if not f.name.startswith("esc10_5-")]
        test = [f for f in files if f.name.startswith("esc10_5-")]
        clips += [{"path": f, "source": f"esc10/{cls}", "role": "rep"} for f in train[:3]]
        clips += [{"path": f, "source": f"esc10/{cls}", "role": "heldout"} for f in test[:2]]
    tits = _wavs(shared / "birdsong" / "great_tit")
    clips += [{"path": f, "source": "great_tit", "role": "rep"} for f in tits[:6]]
    clips += [{"path": f, "source": "great_tit", "role": "heldout"} for f in tits[6:10]]
    forest = _wavs(shared / "soundscapes" / "forest_24h")
    by_level = sorted(forest, key=_rms)
    quiet_rep, quiet_held = by_level[:3], by_level[3:5]
    rest = [f for f in forest if f not in by_level[:5]]
    spread_rep = rest[::len(rest) // 6][:6]
    spread_held = [f for f in rest[len(rest) // 12::len(rest) // 4] if f not in spread_rep][:4]
    for f in quiet_rep + spread_rep:
        clips.append({"path": f, "source": "forest_24h" + ("/quiet" if f in quiet_rep else ""), "role": "rep"})
    for f in quiet_held + spread_held:
        clips.append({"path": f, "source": "forest_24h" + ("/quiet" if f in quiet_held else ""), "role": "heldout"})
    return clips


def cut_blocks(clips: list[dict], shared: Path) -> tuple[np.ndarray, list[dict]]:
    """All BACKBONE blocks of the clips, via the device's own path (runtime.pipeline.blocks_of)."""
    from runtime.features.pipeline import blocks_of

    feats, meta = [], []
    for clip_id, clip in enumerate(clips):
        x, rate = read_audio(clip["path"])
        for b in blocks_of(x, rate, BACKBONE):
            feats.append(b.features)
            meta.append({"clip": clip_id, "path": clip["path"].relative_to(shared).as_posix(),
                         "block": b.index, "source": clip["source"], "role": clip["role"]})
    return np.stack(feats).astype(np.float32), meta


# ---------------------------------------------------------------- step 1: PyTorch


def load_torch_net():
    """(aisfx's EmbeddingNet in eval mode with the pretrained weights, the weights as numpy, checkpoint path).

    Needs torch + aisfx (the torch venv); used by step 1 and by the backbone speed bench.
    """
    import aisfx
    import torch
    from aisfx.models.cnn2d import EmbeddingNet

    ckpt = Path(aisfx.__file__).parent / "models" / "checkpoint.pth"
    state, _ds_dict = torch.load(ckpt, map_location="cpu", weights_only=False)
    prefix = "embedding_net."
    weights = {k[len(prefix):]: v.detach().cpu().numpy() for k, v in state.items() if k.startswith(prefix)}
    net = EmbeddingNet("max", 3, 1, 64)
    missing, unexpected = net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    if missing or unexpected:
        raise FieldearError(f"checkpoint does not match EmbeddingNet: missing {missing}, unexpected {unexpected}")
    net.eval()
    return net, weights, ckpt


def step_torch(shared: Path, work: Path) -> None:
    """Export weights and fp32 reference embeddings (runs in the torch venv, never imports TF)."""
    import torch

    net, weights, ckpt = load_torch_net()
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "aisfx_weights.npz", **{k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")})
    log.info("exported %d weight arrays from %s", len(weights), ckpt)

    clips = select_clips(shared)
    blocks, meta = cut_blocks(clips, shared)
    log.info("cut %d blocks from %d clips", len(blocks), len(clips))
    with torch.no_grad():
        emb = np.concatenate([net(torch.from_numpy(blocks[i:i + 16])).numpy() for i in range(0, len(blocks), 16)])
        torch.set_num_threads(1)
        one = torch.from_numpy(blocks[:1])
        net(one)
        times = []
        for _ in range(TIMING_REPEATS):
            t0 = time.perf_counter()
            net(one)
            times.append(time.perf_counter() - t0)
    np.savez(work / "torch_reference.npz", blocks=blocks, embeddings=emb.astype(np.float32),
             meta=json.dumps(meta), torch_ms_per_block=1000.0 * float(np.median(times)),
             torch_version=torch.__version__, checkpoint_sha256=_sha256(ckpt.read_bytes()))
    log.info("torch fp32, 1 thread: %.1f ms per block", 1000.0 * float(np.median(times)))


# ---------------------------------------------------------------- step 2: Keras / TFLite


def folded_conv(weights: dict, block: int, idx: int) -> tuple[np.ndarray, np.ndarray]:
    """Conv (out,in,kh,kw, no bias) followed by eval-mode BN -> HWIO kernel and bias."""
    w = weights[f"conv_block{block}.conv{idx}.weight"].astype(np.float64)
    bn = f"conv_block{block}.bn{idx}."
    gamma, beta = weights[bn + "weight"].astype(np.float64), weights[bn + "bias"].astype(np.float64)
    mean, var = weights[bn + "running_mean"].astype(np.float64), weights[bn + "running_var"].astype(np.float64)
    scale = gamma / np.sqrt(var + BN_EPS)
    kernel = (w * scale[:, None, None, None]).transpose(2, 3, 1, 0)
    bias = beta - mean * scale
    return kernel.astype(np.float32), bias.astype(np.float32)


def build_keras(weights: dict):
    """EmbeddingNet in Keras, input (batch, 100, 96) float32, output (batch, 512)."""
    from convert.tf_quiet import load_keras

    keras = load_keras()

    p = BACKBONE
    inp = keras.Input((p.block_frames, p.n_mels), batch_size=1, name="logmel")
    x = keras.layers.Reshape((p.block_frames, p.n_mels, 1))(inp)
    for block, (ch, pool) in enumerate(zip(CHANNELS, POOLS), start=1):
        for idx in (1, 2):
            conv = keras.layers.Conv2D(ch, 3, padding="same", activation="relu", name=f"b{block}_conv{idx}")
            x = conv(x)
            conv.set_weights(list(folded_conv(weights, block, idx)))
        if pool:
            x = keras.layers.MaxPooling2D(pool, name=f"b{block}_pool")(x)
    x = keras.ops.mean(x, axis=2)  # over frequency: (batch, time, 512)
    out = keras.ops.max(x, axis=1)  # over time: (batch, 512)
    return keras.Model(inp, out, name="aisfx_embedding")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(den, 1e-12)


def convert_int8(model, rep_blocks: np.ndarray) -> bytes:
    """Full int8 (int8 in and out) with the project's one converter setup."""
    from convert.quantize import quantize_int8

    return quantize_int8(model, rep_blocks)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stats(values: np.ndarray) -> dict:
    return {"median": round(float(np.median(values)), 5), "min": round(float(np.min(values)), 5),
            "mean": round(float(np.mean(values)), 5), "n": int(len(values))}


def reference_blocks(meta: list[dict]) -> list[int]:
    """Indices of the blocks stored for the test: the middle block of the first held-out clip of
    each source (10 ESC-10 classes, great tit, forest, near-silent forest)."""
    chosen = []
    for source in sorted({m["source"] for m in meta}):
        clips = [m["clip"] for m in meta if m["source"] == source and m["role"] == "heldout"]
        if clips:
            idx = [i for i, m in enumerate(meta) if m["clip"] == clips[0]]
            chosen.append(idx[len(idx) // 2])
    return chosen


def step_tflite(work: Path, out: Path, reference: Path, max_float_diff: float, min_median_cosine: float) -> dict:
    """Keras build + checks + int8 conversion + outputs (runs in the TF venv)."""
    from runtime.model.interpreter import Runner, backend_version

    wpath, rpath = work / "aisfx_weights.npz", work / "torch_reference.npz"
    for path in (wpath, rpath):
        if not path.exists():
            raise FieldearError(f"{path} is missing", "run step 1 first: python -m convert.tools.backbone_port --step torch")
    weights = dict(np.load(wpath))
    ref = np.load(rpath)
    blocks, torch_emb = ref["blocks"], ref["embeddings"]
    meta = json.loads(str(ref["meta"]))
    rep = np.array([m["role"] == "rep" for m in meta])
    held = ~rep

    model = build_keras(weights)
    keras_emb = np.concatenate([model.predict_on_batch(blocks[i:i + 1]) for i in range(len(blocks))])
    float_diff = float(np.max(np.abs(keras_emb - torch_emb)))
    float_cos = cosine(keras_emb, torch_emb)
    log.info("float Keras vs PyTorch: max abs diff %.2e (embedding max %.2f), min cosine %.6f",
             float_diff, float(np.max(np.abs(torch_emb))), float(np.min(float_cos)))
    if float_diff > max_float_diff:
        raise FieldearError(f"Keras port differs from PyTorch by {float_diff:.3g} (> {max_float_diff})",
                            "the layer mapping or batch-norm folding is wrong")

    log.info("converting to int8 with %d representative blocks", int(rep.sum()))
    tflite = convert_int8(model, blocks[rep])
    runner = Runner(tflite, threads=1)
    int8_emb = runner.run(blocks)
    block_cos = cosine(int8_emb[held], torch_emb[held])
    clip_ids = sorted({m["clip"] for m, h in zip(meta, held) if h})
    clip_cos = []
    for c in clip_ids:
        sel = np.array([m["clip"] == c for m in meta])
        clip_cos.append(cosine(int8_emb[sel].mean(axis=0), torch_emb[sel].mean(axis=0))[0])
    clip_cos = np.array(clip_cos)
    per_source = {}
    for source in sorted({m["source"] for m in meta}):
        sel = np.array([m["source"] == source for m in meta]) & held
        if sel.any():
            per_source[source] = round(float(np.median(cosine(int8_emb[sel], torch_emb[sel]))), 5)
    log.info("int8 vs PyTorch, held-out blocks: median %.4f min %.4f (n=%d); clips: median %.4f min %.4f (n=%d)",
             np.median(block_cos), np.min(block_cos), len(block_cos), np.median(clip_cos), np.min(clip_cos), len(clip_cos))
    if np.median(block_cos) < min_median_cosine:
        raise FieldearError(f"int8 model too far from PyTorch: median cosine {np.median(block_cos):.4f} < {min_median_cosine}",
                            "check the representative set")

    x = blocks[0]
    runner.run_one(x)
    times = []
    for _ in range(TIMING_REPEATS):
        t0 = time.perf_counter()
        runner.run_one(x)
        times.append(time.perf_counter() - t0)
    int8_ms = 1000.0 * float(np.median(times))

    out.mkdir(parents=True, exist_ok=True)
    (out / TFLITE_NAME).write_bytes(tflite)
    rep_sources: dict[str, dict] = {}
    for m in meta:
        if m["role"] == "rep":
            s = rep_sources.setdefault(m["source"], {"clips": set(), "blocks": 0})
            s["clips"].add(m["path"])
            s["blocks"] += 1
    report = {
        "tflite": TFLITE_NAME,
        "sha256": _sha256(tflite),
        "size_bytes": len(tflite),
        "input": runner.input_spec,
        "output": runner.output_spec,
        "frontend": "runtime.features.frontend.BACKBONE (no per-file peak normalisation, unlike aisfx)",
        "input_float_range": [round((-128 - runner.input_spec["zero_point"]) * runner.input_spec["scale"], 4),
                              round((127 - runner.input_spec["zero_point"]) * runner.input_spec["scale"], 4)],
        "float_keras_vs_torch": {"max_abs_diff": float_diff, "min_cosine": round(float(np.min(float_cos)), 7),
                                 "embedding_abs_max": float(np.max(np.abs(torch_emb))), "n_blocks": len(blocks)},
        "int8_vs_torch_heldout_blocks": _stats(block_cos),
        "int8_vs_torch_heldout_clips_mean_pooled": _stats(clip_cos),
        "int8_vs_torch_heldout_median_by_source": per_source,
        "int8_vs_torch_representative_blocks": _stats(cosine(int8_emb[rep], torch_emb[rep])),
        "ms_per_block": {"int8_tflite_1_thread": round(int8_ms, 1),
                         "torch_fp32_1_thread": round(float(ref["torch_ms_per_block"]), 1),
                         "tflite_backend": f"{runner.backend_name} {backend_version(runner.backend_name)}",
                         "torch_version": str(ref["torch_version"]),
                         "note": "median of %d single-block invokes on the build machine" % TIMING_REPEATS},
        "representative_set": {
            "n_blocks": int(rep.sum()),
            "sources": {k: {"clips": len(v["clips"]), "blocks": v["blocks"]} for k, v in sorted(rep_sources.items())},
            "rule": " ".join(select_clips.__doc__.split("\n\n")[1].split()),
        },
        "heldout_set": {"n_blocks": int(held.sum()), "n_clips": len(clip_ids)},
        "checkpoint_sha256": str(ref["checkpoint_sha256"]),
    }
    (out / "port_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "ATTRIBUTION.md").write_text(ATTRIBUTION)

    chosen = reference_blocks(meta)
    reference.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(reference,
                        paths=np.array([meta[i]["path"] for i in chosen]),
                        block_index=np.array([meta[i]["block"] for i in chosen], dtype=np.int32),
                        sources=np.array([meta[i]["source"] for i in chosen]),
                        embeddings=torch_emb[chosen].astype(np.float32))
    log.info("wrote %s (%d bytes, sha256 %s), %s, %s", out / TFLITE_NAME, len(tflite), report["sha256"][:12],
             out / "port_report.json", reference)
    return report


ATTRIBUTION = """\
# aisfx embedding model (ported)

`backbone_int8.tflite` is a port of the pretrained audio-embedding CNN of **aisfx**
(PyPI `aisfx` 0.1.2, https://github.com/alisonbma/aisfx), model "X-Sequential-CE" of:

* Alison Bernice Ma and Alexander Lerch, "Representation Learning for the Automatic Indexing of
  Sound Effects Libraries", Proc. 23rd International Society for Music Information Retrieval
  Conference (ISMIR), 2022. https://zenodo.org/record/7316800
* Pre-trained model (and paper): Copyright (c) 2022 A.B. Ma and A. Lerch, Creative Commons
  Attribution 4.0 International (CC BY 4.0, https://creativecommons.org/licenses/by/4.0/).
  The aisfx package code is declared MIT on PyPI. Its network definition (`EmbeddingNet`) comes
  from the DCASE 2018 cross-task baseline (Kong et al., arXiv:1808.00773).

What we changed:

* Ported from PyTorch to TensorFlow Lite (`convert/tools/backbone_port.py`): only the embedding network
  (4 conv blocks, 512-d output, mean over frequency then max over time); the training-time
  classifier heads are dropped.
* Batch normalisation folded into the convolution weights and biases.
* Quantized to full int8 (int8 input [1, 100, 96] and output [1, 512], int8 builtin ops) with
  post-training quantization on a representative set of real recordings; the measured agreement
  with the original fp32 model is in `port_report.json`.
* Input features come from `runtime.features.frontend.BACKBONE` (aisfx's 44.1 kHz / 96-mel log
  compression), computed on the stream without aisfx's per-file peak normalisation.
"""


# ---------------------------------------------------------------- CLI


def default_torch_python() -> str:
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    return str(ROOT / ".venv-torch" / "bin" / "python")


def run_torch_step(torch_python: str, shared: Path, work: Path) -> None:
    if not Path(torch_python).exists():
        raise FieldearError(f"no PyTorch interpreter at {torch_python}",
                            "run `make backbone` (it creates .venv-torch) or pass --torch-python")
    cmd = [torch_python, "-m", "convert.tools.backbone_port", "--step", "torch", "--shared", str(shared), "--work", str(work)]
    log.info("step 1 (PyTorch): %s", " ".join(cmd))
    result = subprocess.run(cmd, cwd=str(ROOT))
    if result.returncode != 0:
        raise FieldearError(f"step 1 failed (exit {result.returncode})", "see the log above")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m convert.tools.backbone_port", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--step", choices=("all", "torch", "tflite"), default="all",
                    help="all (default): torch step in a subprocess, then tflite step here")
    ap.add_argument("--torch-python", default=None,
                    help="interpreter with torch + aisfx for step 1 (default: this one if it has torch, "
                         "else .venv-torch/bin/python)")
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="real audio (default: ../shared/data)")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="intermediate files (default: out/backbone)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model folder (default: runtime/models/aisfx)")
    ap.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE,
                    help="where to write the PyTorch reference embeddings for tests/model/test_backbone.py "
                         "(default: out/backbone/backbone_reference.npz)")
    ap.add_argument("--max-float-diff", type=float, default=1e-3,
                    help="largest allowed |Keras fp32 - PyTorch fp32| (default 1e-3)")
    ap.add_argument("--min-median-cosine", type=float, default=0.99,
                    help="required median int8-vs-PyTorch cosine on held-out blocks (default 0.99)")
    return ap


def main(argv: list[str] | None = None) -> int:
    from convert.tools import run_tool

    args = build_parser().parse_args(argv)

    def body() -> None:
        if args.step == "torch":
            step_torch(args.shared, args.work)
            return
        if args.step == "all":
            run_torch_step(args.torch_python or default_torch_python(), args.shared, args.work)
        step_tflite(args.work, args.out, args.reference, args.max_float_diff, args.min_median_cosine)

    return run_tool(body, args.shared)


if __name__ == "__main__":
    sys.exit(main())
