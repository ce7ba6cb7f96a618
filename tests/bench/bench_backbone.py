"""The backbone's must-show numbers, measured in one run: int8 TFLite vs the PyTorch fp32 original.

    python -m tests.bench.bench_backbone [--out bench/results] [--torch-python .venv-torch/bin/python]

* The same real blocks (ESC-10, great tit, forest soundscapes, cut by ``runtime.features.pipeline``) go to
  (a) aisfx's PyTorch ``EmbeddingNet`` (fp32, ``torch.set_num_threads(1)``, inference mode) in the torch venv
  that ``make backbone`` creates, and (b) the committed int8 TFLite file through ``runtime.model.interpreter.Runner``
  with one thread, with XNNPACK (the device default) and with the reference kernels.
* Each engine runs in its own process; rounds alternate between them, so a change of load hits both.
  A round's figure is the median over single-block invokes; the result is the fastest round of each
  (other load only ever slows a run), and the ratio of the two.
* Embedding cosine int8 vs PyTorch on the same blocks, per block and per clip (mean-pooled).

Writes ``backbone.json`` into --out (``main(out_dir)`` is what ``tests.bench.run`` calls).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.backbone")

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FIELDEAR_SHARED", ROOT.parent / "shared" / "data"))
TORCH_PYTHON = ROOT / ".venv-torch" / "bin" / "python"
BACKBONE_FILE = ROOT / "runtime" / "models" / "aisfx" / "backbone_int8.tflite"
TARGET_SPEEDUP = 10.0
TARGET_MEDIAN_COSINE = 0.99
ROUNDS = 5
PASSES = 2  # invokes of every block per round

# Child processes (argv: blocks .npz, passes, embeddings .npy out[, model, xnnpack 1/0]): time single-block
# invokes, save the embeddings, print JSON.
TORCH_CHILD = r"""
import json, sys, time
import numpy as np, torch
from convert.tools.backbone_port import load_torch_net
torch.set_num_threads(1)
net, _, _ = load_torch_net()
blocks = np.load(sys.argv[1])["blocks"]
passes = int(sys.argv[2])
with torch.inference_mode():
    emb = np.concatenate([net(torch.from_numpy(b[None])).numpy() for b in blocks])
    net(torch.from_numpy(blocks[:1]))
    times = []
    for _ in range(passes):
        for b in blocks:
            x = torch.from_numpy(b[None])
            t = time.perf_counter(); net(x); times.append(time.perf_counter() - t)
np.save(sys.argv[3], emb.astype(np.float32))
print(json.dumps({"median_ms": 1e3 * float(np.median(times)), "version": torch.__version__,
                  "threads": torch.get_num_threads()}))
"""

TFLITE_CHILD = r"""
import json, sys, time
import numpy as np
from runtime.model.interpreter import Runner, backend_version
runner = Runner(sys.argv[4], threads=1, xnnpack=sys.argv[5] == "1")
blocks = np.load(sys.argv[1])["blocks"]
passes = int(sys.argv[2])
emb = runner.run(blocks)
runner.run_one(blocks[0])
times = []
for _ in range(passes):
    for b in blocks:
        t = time.perf_counter(); runner.run_one(b); times.append(time.perf_counter() - t)
np.save(sys.argv[3], emb.astype(np.float32))
print(json.dumps({"median_ms": 1e3 * float(np.median(times)), "backend": runner.backend_name,
                  "version": backend_version(runner.backend_name)}))
"""


def real_blocks(shared: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Blocks of a few real clips of every kind: (blocks, clip index per block, clip names)."""
    from runtime.audio.files import read_audio
    from runtime.features.frontend import BACKBONE
    from runtime.features.pipeline import blocks_of, stack

    paths = []
    for label in ("dog", "rooster", "rain", "chainsaw", "crying_baby", "clock_tick"):
        paths += sorted((shared / "esc10" / label).glob("*.wav"))[:2]
    paths += sorted((shared / "birdsong" / "great_tit").glob("*.wav"))[:2]
    paths += sorted((shared / "soundscapes" / "forest_24h").glob("*.wav"))[::24]
    if len(paths) < 10:
        raise FileNotFoundError(f"real audio missing under {shared}")
    blocks, owner = [], []
    for i, path in enumerate(paths):
        b = stack(blocks_of(*read_audio(path), BACKBONE), BACKBONE)
        blocks.append(b)
        owner += [i] * len(b)
    return np.concatenate(blocks), np.array(owner), [p.relative_to(shared).as_posix() for p in paths]


def _child(cmd: list[str]) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {r.stderr.strip()[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench_backbone(work: Path, torch_python: Path = TORCH_PYTHON, rounds: int = ROUNDS) -> dict:
    from convert.tools.backbone_port import cosine

    if not torch_python.exists():
        raise FileNotFoundError(f"no PyTorch venv at {torch_python}: `make bench` (or `make backbone`) creates it")
    blocks, owner, names = real_blocks(SHARED)
    data = work / "blocks.npz"
    np.savez(data, blocks=blocks)
    engines = {
        "torch_fp32": lambda out: [str(torch_python), "-c", TORCH_CHILD, str(data), str(PASSES), out],
        "int8_xnnpack": lambda out: [sys.executable, "-c", TFLITE_CHILD, str(data), str(PASSES), out,
                                     str(BACKBONE_FILE), "1"],
        "int8_reference_kernels": lambda out: [sys.executable, "-c", TFLITE_CHILD, str(data), "1", out,
                                               str(BACKBONE_FILE), "0"],
    }
    runs: dict[str, list[dict]] = {k: [] for k in engines}
    emb: dict[str, np.ndarray] = {}
    for r in range(rounds):
        for name, cmd in engines.items():  # alternate: every round runs each engine once
            out = str(work / f"{name}.npy")
            runs[name].append(_child(cmd(out)))
            emb[name] = np.load(out)
            log.info("round %d %s: %.2f ms per block", r + 1, name, runs[name][-1]["median_ms"])
    best = {k: min(x["median_ms"] for x in v) for k, v in runs.items()}
    block_cos = cosine(emb["int8_xnnpack"], emb["torch_fp32"])
    pooled = lambda e: np.stack([e[owner == i].mean(0) for i in range(len(names))])  # noqa: E731
    clip_cos = cosine(pooled(emb["int8_xnnpack"]), pooled(emb["torch_fp32"]))
    speedup = best["torch_fp32"] / best["int8_xnnpack"]
    log.info("backbone: int8 %.2f ms vs torch fp32 %.2f ms per block = %.1fx; cosine median %.4f",
             best["int8_xnnpack"], best["torch_fp32"], speedup, np.median(block_cos))
    return {
        "what": "per 2.32 s block, 1 thread, single-block invokes, fastest of the rounds' medians; same real blocks",
        "blocks": int(len(blocks)), "clips": names, "rounds": rounds,
        "ms_per_block": {k: round(v, 3) for k, v in best.items()},
        "ms_per_block_each_round": {k: [round(x["median_ms"], 3) for x in v] for k, v in runs.items()},
        "torch_version": runs["torch_fp32"][0]["version"],
        "tflite_backend": f"{runs['int8_xnnpack'][0]['backend']} {runs['int8_xnnpack'][0]['version']}",
        "speedup_int8_vs_torch_fp32": round(speedup, 2),
        "speedup_reference_kernels_vs_torch_fp32": round(best["torch_fp32"] / best["int8_reference_kernels"], 2),
        "target_speedup": TARGET_SPEEDUP,
        "cosine_int8_vs_torch_blocks": {"median": round(float(np.median(block_cos)), 5),
                                        "min": round(float(block_cos.min()), 5)},
        "cosine_int8_vs_torch_clips_mean_pooled": {"median": round(float(np.median(clip_cos)), 5),
                                                   "min": round(float(clip_cos.min()), 5)},
        "target_median_cosine": TARGET_MEDIAN_COSINE,
        "load_average_after": os.getloadavg(),
    }


def main(out_dir: str | os.PathLike = "bench/results", torch_python: Path = TORCH_PYTHON) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fieldear-bench-backbone-") as tmp:
        res = bench_backbone(Path(tmp), Path(torch_python))
    res["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    path = out_dir / "backbone.json"
    path.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    log.info("wrote %s", path)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_backbone", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--torch-python", type=Path, default=TORCH_PYTHON)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    r = main(args.out, args.torch_python)
    print(json.dumps({k: r[k] for k in ("ms_per_block", "speedup_int8_vs_torch_fp32", "cosine_int8_vs_torch_blocks")}))
