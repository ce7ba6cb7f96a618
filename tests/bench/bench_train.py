"""Training numbers for the issue: ESC-10 official folds, and 4 labels x 25 clips with wall time.

    python -m tests.bench.bench_train [--out bench/results] [--only esc10,four]

* ``esc10``: the 10 ESC-10 classes, leave-one-fold-out over the official 5 folds (fold = first digit of
  the clip id), backbone + head; accuracy and macro-F1 of the int8 models per fold and mean.
* ``four``: dog, rooster, crying_baby, chainsaw, 25 clips each (5 from each official fold, sorted by
  name), copied into a folder per label; ``fieldear train DATA --out DIR`` run as a process with default
  options and a cold embedding cache; its 5-fold CV accuracy/F1 and its wall time.

Writes ``train.json`` into --out (``main(out_dir)`` is what ``tests.bench.run`` calls).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("bench.train")

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FIELDEAR_SHARED", ROOT.parent / "shared" / "data"))
FOUR = ("dog", "rooster", "crying_baby", "chainsaw")
ESC10_TARGET = 0.95
FOUR_TARGET_ACCURACY = 0.98
FOUR_TARGET_WALL_S = 73.0


def _fold(path: Path) -> str:
    return path.name.split("_", 1)[1].split("-", 1)[0]


def bench_esc10(work: Path) -> dict:
    from convert.data.dataset import write_manifest
    from convert.options import TrainOptions
    from convert.train import train

    esc10 = SHARED / "esc10"
    rows = []
    for label_dir in sorted(p for p in esc10.iterdir() if p.is_dir()):
        for wav in sorted(label_dir.glob("*.wav")):
            rows.append((wav, label_dir.name, _fold(wav), None))
    manifest = write_manifest(rows, work / "esc10.csv")
    t0 = time.perf_counter()
    done = train(TrainOptions(data=manifest, out=work / "esc10_model", candidates=("backbone",),
                              cache_dir=work / "cache_esc10", time_budget=600.0))
    wall = time.perf_counter() - t0
    m = done["meta"]["metrics"]
    folds = m["folds"]
    return {
        "what": "ESC-10, leave-one-fold-out over the official 5 folds; int8 models (backbone + head) scored with the runtime interpreter",
        "n_clips": done["meta"]["dataset"]["n_clips"],
        "candidate": m["candidate"],
        "folds": [{"fold": f["name"], "n": f["n"], "accuracy": round(f["accuracy"], 4), "macro_f1": round(f["macro_f1"], 4)} for f in folds],
        "mean_fold_accuracy": round(sum(f["accuracy"] for f in folds) / len(folds), 4),
        "mean_fold_macro_f1": round(sum(f["macro_f1"] for f in folds) / len(folds), 4),
        "pooled_accuracy": round(m["cv_accuracy"], 4),
        "pooled_macro_f1": round(m["cv_macro_f1"], 4),
        "int8_vs_float": m["quantization"],
        "target_accuracy": ESC10_TARGET,
        "wall_s_cold_cache": round(wall, 1),
    }


def bench_four(work: Path) -> dict:
    data = work / "four"
    for label in FOUR:
        files = sorted((SHARED / "esc10" / label).glob("*.wav"))
        picked = [f for fold in "12345" for f in [g for g in files if _fold(g) == fold][:5]]
        (data / label).mkdir(parents=True)
        for f in picked:
            shutil.copyfile(f, data / label / f.name)
    out = work / "four_model"
    cache = work / "cache_four"  # cold: nothing computed before
    exe = Path(sys.executable).with_name("fieldear")
    cmd = ([str(exe)] if exe.exists() else [sys.executable, "-m", "runtime.cli"]) + [
        "train", str(data), "--out", str(out), "--cache", str(cache)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"fieldear train failed ({r.returncode}): {r.stderr[-1500:]}")
    meta = json.loads((out / "model.json").read_text())
    report = json.loads((out / "report.json").read_text())
    m = meta["metrics"]
    return {
        "what": "4 labels x 25 clips (dog, rooster, crying_baby, chainsaw; 5 per official fold), "
                "`fieldear train DATA --out DIR` with default options, cold embedding cache, 5-fold stratified CV",
        "command": " ".join(["fieldear"] + cmd[-6:]),
        "candidate": m["candidate"],
        "cv_accuracy": round(m["cv_accuracy"], 4),
        "cv_macro_f1": round(m["cv_macro_f1"], 4),
        "folds": [{"fold": f["name"], "accuracy": round(f["accuracy"], 4), "macro_f1": round(f["macro_f1"], 4)} for f in m["folds"]],
        "int8_vs_float": m["quantization"],
        "candidates": [{k: c.get(k) for k in ("name", "cv_accuracy", "cv_macro_f1", "seconds", "note")} for c in report["candidates"]],
        "wall_s": round(wall, 1),
        "train_seconds_reported": report.get("train_seconds"),
        "target_accuracy": FOUR_TARGET_ACCURACY,
        "target_wall_s": FOUR_TARGET_WALL_S,
        "load_average_after": os.getloadavg(),
    }


def main(out_dir: str | os.PathLike = "bench/results", only: tuple[str, ...] = ("esc10", "four")) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "train.json"
    results = {}
    if set(only) != {"esc10", "four"} and path.is_file():  # a partial run updates the other section's file
        results = json.loads(path.read_text(encoding="utf-8"))
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="fieldear-bench-train-") as tmp:
        work = Path(tmp)
        if "four" in only:  # first: its wall time should not profit from anything warmed up before
            log.info("bench: 4 labels x 25 clips ...")
            results["four_labels_25_clips"] = bench_four(work)
        if "esc10" in only:
            log.info("bench: ESC-10 official folds ...")
            results["esc10_official_folds"] = bench_esc10(work)
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    log.info("wrote %s", path)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--only", default="esc10,four")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    res = main(args.out, tuple(x.strip() for x in args.only.split(",")))
    print(json.dumps(res, indent=1))
