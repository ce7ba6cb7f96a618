"""Training numbers for the issue: ESC-10 official folds, 4 labels x 25 clips with wall time, imbalanced label sets;
per candidate and the one chosen.

    python -m tests.bench.bench_train [--out bench/results] [--only four,esc10,imbalanced4,imbalanced10,esc10_nested]

* ``esc10``: the 10 ESC-10 classes, leave-one-fold-out over the official 5 folds (fold = first digit of
  the clip id), backbone + head; accuracy and macro-F1 of the int8 models per fold and mean. Its candidate is
  chosen by the same CV that scores it (a selection bias, small with few candidates);
* ``esc10_nested``: the same folds without that bias: for each official fold, `train` on the other four (its own CV
  chooses the candidate) and the int8 bundle scores the held-out fold.
* ``four``: dog, rooster, crying_baby, chainsaw, 25 clips each (5 from each official fold, sorted by
  name), copied into a folder per label; ``fieldear train DATA --out DIR`` run as a process with default
  options and a cold embedding cache; its 5-fold CV accuracy/F1 and its wall time.

* ``imbalanced4``: dog 40, rooster 20, crying_baby 10, chainsaw 5 clips; ``imbalanced10``: the 10 ESC-10 labels in
  name order with 40, 36, ..., 5 clips; default options, 5-fold stratified CV, per-label figures with support.

Every section lists each candidate's float CV accuracy and macro-F1. The candidate list was chosen on the design sets
(``fsdd_manifest``, ``OTHER_SIX``), never on these.

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
IMBALANCED_TARGET_ACCURACY = 0.95
IMBALANCED_TARGET_MACRO_F1 = 0.90
SECTIONS = ("four", "esc10", "imbalanced4", "imbalanced10", "esc10_nested")


# imbalanced sets: clips per label (ESC-10 classes in name order), spread over the official folds
IMBALANCED_FOUR = dict(zip(FOUR, (40, 20, 10, 5)))
IMBALANCED_TEN = (40, 36, 32, 28, 24, 21, 17, 13, 9, 5)  # 40..5, evenly spaced
# design sets, never reported as results: the candidate list was chosen on these (fsdd speakers, the other ESC-10 classes)
OTHER_SIX = ("clock_tick", "crackling_fire", "helicopter", "rain", "sea_waves", "sneezing")


def _fold(path: Path) -> str:
    return path.name.split("_", 1)[1].split("-", 1)[0]


def esc10_clips(label: str, n: int | None = None) -> list[Path]:
    """The first ``n`` clips of an ESC-10 label (all when None), taken round-robin over the official folds
    (in name order), so that every fold holds about the same share of each label."""
    files = sorted((SHARED / "esc10" / label).glob("*.wav"))
    by_fold = [[f for f in files if _fold(f) == fold] for fold in "12345"]
    order = [fold[i] for i in range(max(map(len, by_fold))) for fold in by_fold if i < len(fold)]
    return order if n is None else order[:n]


def esc10_manifest(path: Path, counts: dict[str, int | None], folds: bool = False, without_fold: str | None = None) -> Path:
    """A manifest of ESC-10 clips, ``counts`` per label; with ``folds``, the official fold column; ``without_fold``:
    that official fold left out."""
    from convert.data.dataset import write_manifest

    rows = [(wav, label, _fold(wav) if folds else None, None)
            for label, n in counts.items() for wav in esc10_clips(label, n) if _fold(wav) != without_fold]
    return write_manifest(rows, path)


def fsdd_manifest(path: Path, per_digit: int = 30) -> Path:
    """FSDD digits, ``per_digit`` clips each (the same number from every speaker), the speaker as fold."""
    from convert.data.dataset import write_manifest

    rows = []
    for digit in sorted(p.name for p in (SHARED / "fsdd").iterdir() if p.is_dir()):
        files = sorted((SHARED / "fsdd" / digit).glob("*.wav"), key=lambda f: int(f.stem.rsplit("_", 1)[1]))
        speakers = sorted({f.stem.split("_")[1] for f in files})
        per = per_digit // len(speakers)
        rows += [(f, digit, s, None) for s in speakers for f in [g for g in files if g.stem.split("_")[1] == s][:per]]
    return write_manifest(rows, path)


def esc10_labels() -> list[str]:
    return sorted(p.name for p in (SHARED / "esc10").iterdir() if p.is_dir())


def candidate_figures(report: dict) -> list[dict]:
    """Per candidate tried (report.json's "candidates"): its float CV accuracy and macro-F1, seconds, chosen or not;
    a candidate skipped only carries its note."""
    keys = ("name", "cv_accuracy", "cv_macro_f1", "seconds", "note")
    return [{k: round(c[k], 4) if isinstance(c.get(k), float) else c.get(k) for k in keys if k in c}
            for c in report["candidates"]]


def bench_esc10(work: Path) -> dict:
    from convert.options import TrainOptions
    from convert.train import train

    manifest = esc10_manifest(work / "esc10.csv", {label: None for label in esc10_labels()}, folds=True)
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
        "candidates": candidate_figures(done["result"]),
        "target_accuracy": ESC10_TARGET,
        "wall_s_cold_cache": round(wall, 1),
    }


def bench_esc10_nested(work: Path) -> dict:
    """ESC-10 with the candidate choice inside the loop: for each official fold, `train` (its own CV over the other
    four folds picks the candidate) and the int8 bundle scores the held-out fold, which no choice saw."""
    import numpy as np

    from convert.families.embed import clip_blocks
    from convert.options import TrainOptions
    from convert.train import train
    from runtime.evaluate.metrics import classification_report
    from runtime.model.model import Model

    labels = esc10_labels()
    rows, y_true, y_pred = [], [], []
    t0 = time.perf_counter()
    for fold in "12345":
        manifest = esc10_manifest(work / f"esc10_without{fold}.csv", {label: None for label in labels}, folds=True,
                                  without_fold=fold)
        done = train(TrainOptions(data=manifest, out=work / f"esc10_without{fold}_model", candidates=("backbone",),
                                  cache_dir=work / "cache_esc10", time_budget=600.0))
        model = Model.load(work / f"esc10_without{fold}_model")
        truth, pred = [], []
        for label in labels:
            for wav in (w for w in esc10_clips(label) if _fold(w) == fold):
                blocks = clip_blocks(wav, model.params)  # the classifier's scores, as predict shows them
                scores = model.pool(np.stack([model.score_block_both(b)[0] for b in blocks]))
                truth.append(label)
                pred.append(model.labels[int(scores.argmax())])
        rep = classification_report(truth, pred, labels)
        rows.append({"held_out_fold": fold, "n": len(truth), "chosen": done["meta"]["metrics"]["candidate"],
                     "accuracy": round(rep["accuracy"], 4), "macro_f1": round(rep["macro"]["f1"], 4)})
        y_true += truth
        y_pred += pred
    rep = classification_report(y_true, y_pred, labels)
    return {
        "what": "ESC-10, nested: per official fold, `train` on the other four (its CV over those folds chooses the "
                "candidate), the int8 bundle scored on the held-out fold by the runtime",
        "folds": rows,
        "accuracy": round(rep["accuracy"], 4),
        "macro_f1": round(rep["macro"]["f1"], 4),
        "target_accuracy": ESC10_TARGET,
        "wall_s": round(time.perf_counter() - t0, 1),  # embeddings cached when the esc10 section ran before
    }


def bench_imbalanced(work: Path, name: str, counts: dict[str, int]) -> dict:
    """ESC-10 labels with unequal clip counts, default options, 5-fold stratified CV: int8 accuracy, macro-F1 and
    the per-label figures with their support."""
    from convert.options import TrainOptions
    from convert.train import train

    manifest = esc10_manifest(work / f"{name}.csv", counts)
    t0 = time.perf_counter()
    done = train(TrainOptions(data=manifest, out=work / f"{name}_model", cache_dir=work / f"cache_{name}"))
    wall = time.perf_counter() - t0
    m = done["meta"]["metrics"]
    from runtime.evaluate.metrics import classification_report

    cv = done["result"]["cv"]
    per_label = {label: {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                 for label, row in classification_report(cv["y_true"], cv["y_pred"], done["result"]["labels"])
                 ["per_label"].items()}
    return {
        "what": f"ESC-10 labels with {', '.join(f'{k} {v}' for k, v in counts.items())} clips (spread over the official "
                "folds), `train` with default options, 5-fold stratified CV; int8 models",
        "candidate": m["candidate"],
        "cv_accuracy": round(m["cv_accuracy"], 4),
        "cv_macro_f1": round(m["cv_macro_f1"], 4),
        "per_label": per_label,
        "int8_vs_float": m["quantization"],
        "candidates": candidate_figures(done["result"]),
        "target_accuracy": IMBALANCED_TARGET_ACCURACY,
        "target_macro_f1": IMBALANCED_TARGET_MACRO_F1,
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
        "candidates": candidate_figures(report),
        "wall_s": round(wall, 1),
        "train_seconds_reported": report.get("train_seconds"),
        "target_accuracy": FOUR_TARGET_ACCURACY,
        "target_wall_s": FOUR_TARGET_WALL_S,
        "load_average_after": os.getloadavg(),
    }


def main(out_dir: str | os.PathLike = "bench/results", only: tuple[str, ...] = SECTIONS) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "train.json"
    results = {}
    if set(only) != set(SECTIONS) and path.is_file():  # a partial run updates the other section's file
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
        if "esc10_nested" in only:  # after esc10: its embeddings are cached then
            log.info("bench: ESC-10 nested (candidate chosen without the held-out fold) ...")
            results["esc10_nested"] = bench_esc10_nested(work)
        if "imbalanced4" in only:
            log.info("bench: 4 labels with 40/20/10/5 clips ...")
            results["imbalanced_4_labels"] = bench_imbalanced(work, "imbalanced4", IMBALANCED_FOUR)
        if "imbalanced10" in only:
            log.info("bench: 10 labels with 40..5 clips ...")
            results["imbalanced_10_labels"] = bench_imbalanced(work, "imbalanced10",
                                                               dict(zip(esc10_labels(), IMBALANCED_TEN)))
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    log.info("wrote %s", path)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--only", default=",".join(SECTIONS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    res = main(args.out, tuple(x.strip() for x in args.only.split(",")))
    print(json.dumps(res, indent=1))
