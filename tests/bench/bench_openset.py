"""Open-set bench (issue 12): how a model from plain `fieldear train` behaves on streams full of sounds it was
never taught, with the defaults a user gets.

Train on 4 ESC-10 classes (folds 1-4) with ``fieldear train MANIFEST --out DIR`` (no flags). Build two streams:
the odd-hour forest soundscapes and the spinetail dawn recording (cycled), each carrying all the held-out
fold-5 clips of the 4 classes as targets and, as distractors, half of fold-5 clips of the other 6 ESC-10 classes, spoken
digits (FSDD, speakers the built-in negative set does not hold) and great-tit song, at known times and SNR U(6, 18) dB over the local background. Replay each with
``fieldear listen --file`` (no flags) and score it with the library of ``fieldear evaluate --db``: event F1 per
label and macro (overlap criterion), false alarms per hour, and the distractor hit rate (distractors overlapped by
any reported event). Nothing here is tuned: it is the yardstick the open-set work is measured against.

    python -m tests.bench.bench_openset [--out bench/results] [--model DIR]

Writes ``<out>/openset.json`` (work files under ``<out>/openset_work/``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from tests.bench.bench_stream import esc10_rows, forest_files, run_listen
from tests.bench.make_demo import (
    RATE,
    active_region,
    build_bed,
    load,
    mix_in,
    write_truth,
)

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FIELDEAR_SHARED", ROOT.parent / "shared" / "data"))
log = logging.getLogger("bench_openset")

TARGETS = ("crying_baby", "dog", "rooster", "sneezing")
TEST_FOLD = 5
PER_OTHER_CLASS = 4  # fold-5 clips of each of the 6 untaught ESC-10 classes
N_DIGITS = 12
# FSDD speakers the distractors come from: the built-in negative set (convert/data/negative_set) is made from the
# other three, so the bench's speech is voices the model never heard.
DIGIT_SPEAKERS = ("nicolas", "theo", "yweweler")
N_SONGS = 12
SNR_DB = (6.0, 18.0)
GAP_S = (4.0, 8.0)


def write_train_manifest(shared: Path, work: Path) -> Path:
    manifest = work / "train.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "fold"])
        for r in esc10_rows(shared):
            if r["label"] in TARGETS and r["fold"] != TEST_FOLD:
                w.writerow([str(r["path"]), r["label"], r["fold"]])
    return manifest


def stream_items(shared: Path, rng) -> tuple[list[dict], list[dict]]:
    """(targets, distractors): each a dict with path and label ("" for a distractor's kind)."""
    test = [r for r in esc10_rows(shared) if r["fold"] == TEST_FOLD]
    targets = [{"path": r["path"], "label": r["label"]} for r in test if r["label"] in TARGETS]
    distractors = []
    for label in sorted({r["label"] for r in test} - set(TARGETS)):
        rows = [r for r in test if r["label"] == label]
        distractors += [{"path": rows[i]["path"], "kind": f"esc10:{label}"}
                        for i in rng.choice(len(rows), PER_OTHER_CLASS, replace=False)]
    digits = sorted(p for p in (shared / "fsdd").glob("*/*.wav") if p.stem.split("_")[1] in DIGIT_SPEAKERS)
    distractors += [{"path": digits[i], "kind": "speech"} for i in rng.choice(len(digits), N_DIGITS, replace=False)]
    songs = sorted((shared / "birdsong" / "great_tit").glob("*.wav"))
    distractors += [{"path": songs[i], "kind": "great_tit"}
                    for i in rng.choice(len(songs), min(N_SONGS, len(songs)), replace=False)]
    return targets, distractors


def build_stream(name: str, bed_files: list[Path], items: list[dict], work: Path, rng) -> dict:
    from runtime.audio.wav import write_wav

    clips, t = [], 2.0
    for k in rng.permutation(len(items)):
        x = load(items[k]["path"])
        a, b = active_region(x)
        clips.append((t, x, items[k]))
        t += (b - a) / RATE + float(rng.uniform(*GAP_S))
    cycle = [bed_files[i % len(bed_files)] for i in range(int(t // 9.0) + 3)]
    bed = build_bed(cycle, t + 2.0)
    targets, distractors = [], []
    for at, x, item in clips:
        a, b = active_region(x)
        i0 = int(at * RATE)
        rms = max(np.sqrt(np.mean(bed[i0: i0 + (b - a)] ** 2)), 1e-3) * 10 ** (rng.uniform(*SNR_DB) / 20)
        placed = mix_in(bed, x, at, rms, item.get("label") or item["kind"], str(item["path"]))
        (targets if item.get("label") else distractors).append(placed)
    bed *= min(1.0, 0.98 / max(np.max(np.abs(bed)), 1e-9))
    wav, truth = work / f"{name}.wav", work / f"{name}_truth.csv"
    write_wav(wav, bed.astype(np.float32), RATE)
    write_truth(truth, targets)
    return {"wav": wav, "truth": truth, "distractors": distractors, "duration_s": len(bed) / RATE}


def score(stream: dict, model: Path, work: Path, name: str) -> dict:
    from runtime.evaluate.stream_eval import evaluate_run, load_run

    db = work / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    summary, wall = run_listen(["--file", str(stream["wav"]), "--db", str(db), "--model", str(model)])
    result = evaluate_run(db, stream["truth"])
    pred, _, _ = load_run(db, None)
    hit = [d for d in stream["distractors"] if any(p.start_s < d.end_s and d.start_s < p.end_s for p in pred)]
    kinds = sorted({d.label for d in stream["distractors"]})
    return {
        "duration_s": round(stream["duration_s"], 1), "n_targets": result["n_true"], "n_events": result["n_pred"],
        "event_f1": {label: result["per_label"][label]["event_overlap"]["f1"] for label in TARGETS},
        "macro_event_f1": result["macro_f1"]["event_overlap"],
        "false_alarms_per_hour": result["false_alarms_per_hour"],
        "n_distractors": len(stream["distractors"]),
        "distractor_hit_rate": round(len(hit) / max(1, len(stream["distractors"])), 3),
        "distractors_hit_by_kind": {k: sum(d.label == k for d in hit) for k in kinds},
        "listen_wall_s": round(wall, 1),
    }


def site_audio(shared: Path, work: Path) -> tuple[dict, dict]:
    """(test beds, site recordings) per stream. Forest: odd quarter-hours are the test beds, the even ones (other
    times of the same site) the site's background. Spinetail: its second half is the test bed, its first half the
    background recorded earlier at the site."""
    from runtime.audio.wav import write_wav

    even, odd = forest_files(shared)
    site = work / "site"
    site.mkdir(exist_ok=True)
    x = load(sorted((shared / "soundscapes" / "spinetail").glob("*.wav"))[0])
    half = len(x) // 2
    write_wav(site / "spinetail_first_half.wav", x[:half].astype(np.float32), RATE)
    write_wav(site / "spinetail_second_half.wav", x[half:].astype(np.float32), RATE)
    write_wav(site / "forest_even_hours.wav", np.concatenate([load(p) for p in even]).astype(np.float32), RATE)
    beds = {"forest": odd, "spinetail": [site / "spinetail_second_half.wav"]}
    recordings = {"forest": site / "forest_even_hours.wav", "spinetail": site / "spinetail_first_half.wav"}
    return beds, recordings


def cli(argv: list[str]) -> None:
    from runtime.cli.main import main as cli_main

    if cli_main(argv) != 0:
        raise RuntimeError(f"fieldear {' '.join(argv[:1])} failed: {argv}")


def main(out_dir: Path, model: Path | None = None, shared: Path = SHARED, seed: int = 0, site: bool = True) -> dict:
    """Score the plain model; with ``site``, also the site-adapted ones a user makes with `fieldear background
    record` then `train --update` (head only) or `train --background` (full retrain)."""
    work = Path(out_dir) / "openset_work"
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    manifest = write_train_manifest(shared, work)
    if model is None:
        model = work / "model"
        cli(["train", str(manifest), "--out", str(model), "--force"])
    targets, distractors = stream_items(shared, rng)
    beds, recordings = site_audio(shared, work)
    result = {"model": str(model), "targets": list(TARGETS), "listen_flags": "none (the defaults a user gets)",
              "streams": {}, "site_adapted": {}}
    for k, (name, files) in enumerate(beds.items()):
        items = targets + distractors[k::2]  # every held-out target in both streams (32 events each), half the distractors
        stream = build_stream(name, files, items, work, rng)
        result["streams"][name] = score(stream, model, work, name)
        log.info("%s: %s", name, json.dumps(result["streams"][name]))
        if not site:
            continue
        bg = work / f"site_bg_{name}"
        shutil.rmtree(bg, ignore_errors=True)
        cli(["background", "record", "--file", str(recordings[name]), "--minutes", "60", "--out", str(bg)])
        adapted = {}
        for how, argv in (("update", ["train", "--update", str(model)]), ("retrain", ["train", str(manifest)])):
            out = work / f"model_{name}_{how}"
            t0 = time.perf_counter()
            cli(argv + ["--background", str(bg), "--out", str(out), "--force"])
            adapted[how] = {"train_wall_s": round(time.perf_counter() - t0, 1),
                            **score(stream, out, work, f"{name}_{how}")}
            log.info("%s, %s: %s", name, how, json.dumps(adapted[how]))
        result["site_adapted"][name] = adapted
    (Path(out_dir) / "openset.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--model", type=Path, default=None, help="score this bundle instead of training one")
    ap.add_argument("--no-site", dest="site", action="store_false", help="skip the site-adapted models")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    print(json.dumps(main(args.out, args.model, site=args.site), indent=2))
    sys.exit(0)
