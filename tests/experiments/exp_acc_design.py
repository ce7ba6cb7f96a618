"""Design experiment for the backbone family's training copies (issue 15): float CV of every head candidate with
and without the time-shifted copy (``convert.families.backbone.SHIFT_HOPS``), mixup of embeddings or a wider
logistic-regression C grid, on design sets only, never on the
sets bench_train reports (ESC-10's clips):

* ``fsdd``: FSDD digits, 30 per digit, folds by speaker (``bench_train.fsdd_manifest``); every clip is shorter than
  a block plus the shift, so the shifted copy is empty there (a check that it changes nothing);
* ``forest``: the 96 ten-second forest_24h soundscapes by quarter of the day (00-06, 06-12, 12-18, 18-24 h), one
  fold per hour of the quarter (hour mod 6), so recordings 15 min apart never straddle train and validation;
* ``tits``: the 20 great-tit songs by singer (B32, SW83), stratified 5-fold;
* ``fsdd_events``: the ``fsdd`` clips as short events in 5 s clips (ESC-10's shape): each digit (resampled to
  16 kHz) at a seeded random offset over a random 5 s of a forest_24h soundscape at 20-35 dB SNR
  (``convert.openset.mixing.mix``), folds by speaker; ``fsdd_events_noisy``: the same at 5-20 dB SNR (the first
  version of this set; near chance, 0.25-0.27, so it hardly tells variants apart).

    python -m tests.experiments.exp_acc_design [--out DIR] [--sets fsdd,forest,tits,fsdd_events] [--variants plain,shift,shift3,mixup,cgrid]

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

# variant: (time-shift copies in block hops, mixup pairs per labelled training block)
VARIANTS = {"plain": ((), 0.0), "shift": ((0.5,), 0.0), "shift3": ((0.25, 0.5, 0.75), 0.0), "mixup": ((), 0.5),
            "cgrid": ((), 0.0)}
# variant: logistic-regression C values tried beside HEAD_SPECS (a wider C grid chosen by the same CV)
EXTRA_C = {"cgrid": (0.003, 0.03, 0.3)}
MIXUP_BETA = 0.4  # lambda ~ Beta(0.4, 0.4), the usual mixup choice, fixed in advance


def mixup_family(options, pairs: float):
    """A BackboneFamily whose training sets also hold mixup rows: ``pairs`` per labelled block, each the blend
    lam * a + (1 - lam) * b of two random labelled blocks, entered twice (a's label with weight lam * w_a, b's with
    (1 - lam) * w_b: the soft-label loss with hard-label rows). Experiment only."""
    import numpy as np

    from convert.families.backbone import BackboneFamily

    class MixupFamily(BackboneFamily):
        def training_set(self, idx, y, n_labels, fold=None):
            x, yy, w = super().training_set(idx, y, n_labels, fold)
            if pairs <= 0:
                return x, yy, w
            rng = np.random.default_rng(self.options.seed + 1000 + (fold if fold is not None else -1))
            lab = np.flatnonzero(yy < n_labels)
            m = int(pairs * len(lab))
            a, b = rng.choice(lab, m), rng.choice(lab, m)
            lam = rng.beta(MIXUP_BETA, MIXUP_BETA, m)
            xm = lam[:, None] * x[a] + (1 - lam[:, None]) * x[b]
            return (np.concatenate([x, xm, xm]), np.concatenate([yy, yy[a], yy[b]]),
                    np.concatenate([w, lam * w[a], (1 - lam) * w[b]]))

    return MixupFamily(options)
SETS = ("fsdd", "forest", "tits", "fsdd_events", "fsdd_events_noisy")
EVENT_SECONDS, EVENT_RATE = 5.0, 16000


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


def fsdd_events_manifest(path: Path, snr_db: tuple[float, float] = (20.0, 35.0), seed: int = 0) -> Path:
    import csv

    import numpy as np
    from scipy.signal import resample_poly

    from convert.data.dataset import write_manifest
    from convert.openset.mixing import mix
    from runtime.audio.files import read_audio
    from runtime.audio.wav import write_wav

    source = fsdd_manifest(path.with_name(path.stem + "_source.csv"))
    beds = [read_audio(p, EVENT_RATE)[0] for p in sorted((SHARED / "soundscapes" / "forest_24h").glob("*.wav"))]
    rng = np.random.default_rng(seed)
    n = int(EVENT_SECONDS * EVENT_RATE)
    rows = []
    with open(source, newline="") as f:
        for r in csv.DictReader(f):
            wav = Path(r["path"]) if Path(r["path"]).is_absolute() else source.parent / r["path"]
            digit, rate = read_audio(wav)
            digit = resample_poly(digit, EVENT_RATE, rate).astype(np.float32)[:n]
            clip = np.zeros(n, dtype=np.float32)
            at = int(rng.integers(0, n - len(digit) + 1))
            clip[at:at + len(digit)] = digit
            bed = beds[int(rng.integers(len(beds)))]
            out = path.parent / path.stem / r["label"] / wav.name
            out.parent.mkdir(parents=True, exist_ok=True)
            write_wav(out, mix(clip, bed, float(rng.uniform(*snr_db)), int(rng.integers(len(bed)))), EVENT_RATE)
            rows.append((out, r["label"], r["fold"], None))
    return write_manifest(rows, path)


MANIFESTS = {"fsdd": fsdd_manifest, "forest": forest_manifest, "tits": tits_manifest,
             "fsdd_events": fsdd_events_manifest,
             "fsdd_events_noisy": lambda path: fsdd_events_manifest(path, snr_db=(5.0, 20.0))}


def run_set(name: str, work: Path, variants: tuple[str, ...] = ("plain", "shift")) -> dict:
    from convert.families.base import scores_report
    from convert.families.heads import HeadSpec
    from convert.openset.run import prepare_negatives
    from convert.options import TrainOptions
    from convert.train import load_cv_data, select

    manifest = MANIFESTS[name](work / f"{name}.csv")
    options = TrainOptions(data=manifest, out=work / f"{name}_model", cache_dir=work / "cache")
    data = load_cv_data(options)
    out = {}
    for variant in variants:
        hops, pairs = VARIANTS[variant]
        family = mixup_family(options, pairs)
        family.shift_hops = hops
        family.specs += [HeadSpec("logreg", c=c) for c in EXTRA_C.get(variant, ())]
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


def main(out_dir: Path, sets: tuple[str, ...], variants: tuple[str, ...] = ("plain", "shift")) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "acc_design.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for name in sets:  # a later run of other variants adds to a set's earlier ones
        results[name] = {**results.get(name, {}), **run_set(name, out_dir, variants)}
    path.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/acc_design"))
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--variants", default="plain,shift", help=f"of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    res = main(args.out, tuple(s.strip() for s in args.sets.split(",")), tuple(v.strip() for v in args.variants.split(",")))
    print(json.dumps({k: {v: {x: r[x] for x in ("chosen", "accuracy", "macro_f1", "seconds")} for v, r in d.items()}
                      for k, d in res.items()}, indent=1))
