"""Design experiment for the backbone family's training copies (issue 15): float CV of every head candidate with
and without the time-shifted copy (``convert.families.backbone.SHIFT_HOPS``), on design sets only, never on the
sets bench_train reports (ESC-10's clips):

* ``fsdd``: FSDD digits, 30 per digit, folds by speaker (``bench_train.fsdd_manifest``); every clip is shorter than
  a block plus the shift, so the shifted copy is empty there (a check that it changes nothing);
* ``forest``: the 96 ten-second forest_24h soundscapes by quarter of the day (00-06, 06-12, 12-18, 18-24 h), one
  fold per hour of the quarter (hour mod 6), so recordings 15 min apart never straddle train and validation;
* ``tits``: the 20 great-tit songs by singer (B32, SW83), stratified 5-fold.

    python -m tests.bench.exp_acc_design [--out DIR] [--sets fsdd,forest,tits]

Writes ``acc_design.json``: per set and variant, each candidate's float CV accuracy / macro-F1 and the one train's
rule (``convert.train.select``) picks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from tests.bench.bench_train import SHARED, fsdd_manifest

log = logging.getLogger("bench.acc_design")

VARIANTS = {"plain": (), "shift": (0.5,)}
SETS = ("fsdd", "forest", "tits")


def forest_manifest(path: Path) -> Path:
    from convert.data.dataset import write_manifest

    rows = []
    for wav in sorted((SHARED / "soundscapes" / "forest_24h").glob("*.wav")):
        hour = int(wav.stem.rsplit("_", 1)[1][:2])
        rows.append((wav, f"h{6 * (hour // 6):02d}", str(hour % 6), None))
    return write_manifest(rows, path)


def tits_manifest(path: Path) -> Path:
    import csv

    from convert.data.dataset import write_manifest

    with open(SHARED / "birdsong" / "metadata.csv", newline="") as f:
        rows = [(SHARED / "birdsong" / r["file"], r["original_name"].split(",")[0].split()[-1], None, None)
                for r in csv.DictReader(f)]
    return write_manifest(rows, path)


MANIFESTS = {"fsdd": fsdd_manifest, "forest": forest_manifest, "tits": tits_manifest}


def run_set(name: str, work: Path) -> dict:
    from convert.families.backbone import BackboneFamily
    from convert.families.base import scores_report
    from convert.openset.run import prepare_negatives
    from convert.options import TrainOptions
    from convert.train import load_cv_data, select

    manifest = MANIFESTS[name](work / f"{name}.csv")
    options = TrainOptions(data=manifest, out=work / f"{name}_model", cache_dir=work / "cache")
    data = load_cv_data(options)
    out = {}
    for variant, hops in VARIANTS.items():
        family = BackboneFamily(options)
        family.shift_hops = hops
        t0 = time.monotonic()
        family.prepare(data.dataset)
        family.negatives = prepare_negatives(family, data, options)
        trials = family.cross_validate(data.y, data.splits, data.n_labels, options.seed, None, data.labels)
        best, why = select(trials, data.y, data.labels)
        rows = {}
        for t in trials:
            rep = scores_report(data.y, t.oof_float, data.labels)
            rows[t.name] = {"accuracy": round(rep["accuracy"], 4), "macro_f1": round(rep["macro"]["f1"], 4)}
        out[variant] = {"chosen": best.name, **rows[best.name], "seconds": round(time.monotonic() - t0, 1),
                        "training_blocks": int(len(family.training_set(data.splits[0][0], data.y, data.n_labels)[0])),
                        "candidates": rows}
        log.info("%s %s: %s %s", name, variant, best.name, rows[best.name])
    return out


def main(out_dir: Path, sets: tuple[str, ...]) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {name: run_set(name, out_dir) for name in sets}
    (out_dir / "acc_design.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/acc_design"))
    parser.add_argument("--sets", default=",".join(SETS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    res = main(args.out, tuple(s.strip() for s in args.sets.split(",")))
    print(json.dumps({k: {v: {x: r[x] for x in ("chosen", "accuracy", "macro_f1", "seconds")} for v, r in d.items()}
                      for k, d in res.items()}, indent=1))
