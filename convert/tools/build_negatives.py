"""Build the built-in negative set (``make negatives``): backbone embeddings of "none of my labels" sound.

Run ``python -m convert.tools.build_negatives --shared ../shared/data --out convert/data/negative_set``.
Heads are trained against these blocks as negatives; the repo ships embeddings only, never audio.

Sources (fixed; nothing here is bench material):

* ``soundscapes/forest_24h/``: the even-index files of the sorted list (``files[0::2]``, 48 x 10 s;
  the odd ones are the bench's test beds, ``tests/bench/bench_stream.py`` ``forest_files``).
  kind ``bed``, category ``ambient``. scikit-maad developers, BSD-3-Clause.
* ``esc10/``: every clip of folds 1-4 (fold = first number of the id in ``esc10_<fold>-...wav``), all 10
  classes; fold 5 is never used (the benches test on it). kind ``event``, category = the ESC-10 class.
  K. J. Piczak 2015; per-clip author, licence (CC BY 3.0 / CC0) and link from ``esc10/metadata.csv``.
* ``fsdd/``: speakers george, jackson, lucas only (``NEGATIVE_SPEAKERS``; the bench uses nicolas, theo,
  yweweler), the lowest 10 indices per digit per speaker. kind ``event``, category ``speech``. CC BY-SA 4.0.
* synthetic items made here with a fixed numpy seed, 10 s at 16 kHz each, written as temporary 16-bit
  WAVs and embedded like the rest: digital silence, white noise at -60/-40 dBFS, pink noise at
  -50/-30 dBFS, brown noise at -40 dBFS, 50 Hz and 60 Hz hum with harmonics at -40 dBFS, wind-like
  low-passed noise at -30 dBFS (dBFS = RMS re full scale, RMS 1.0 = 0 dBFS). kind ``bed``, category
  ``synthetic:<name>``, CC0-1.0 (made by fieldear).

``birdsong/great_tit`` and ``soundscapes/spinetail`` are never used (bench material).

Every block of every item is kept, in order, computed by the device's own frontend and int8 backbone
(``convert.families.embed.dataset_embeddings``). Outputs in ``--out``: ``embeddings.npz`` (``emb`` float16,
``levels`` float32 dB, ``item`` int32 row into ``items.csv``), ``items.csv``, ``manifest.json``,
``ATTRIBUTION.md`` and the scikit-maad BSD-3 notice. Inputs are sorted and the seed is fixed, so a
re-run writes the same bytes (the .npz is written with fixed zip timestamps).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.audio.wav import write_wav
from runtime.errors import DatasetError

log = logging.getLogger(__name__)

NEGATIVE_SPEAKERS = ("george", "jackson", "lucas")
ESC10_FOLDS = (1, 2, 3, 4)
FSDD_PER_DIGIT = 10
SEED = 20261203
SYNTH_RATE = 16000
SYNTH_SECONDS = 10.0

# name -> (generator, level dBFS or None for digital silence)
SYNTHETIC = (
    ("silence", "silence", None),
    ("white_-60dBFS", "white", -60.0),
    ("white_-40dBFS", "white", -40.0),
    ("pink_-50dBFS", "pink", -50.0),
    ("pink_-30dBFS", "pink", -30.0),
    ("brown_-40dBFS", "brown", -40.0),
    ("hum50_-40dBFS", "hum50", -40.0),
    ("hum60_-40dBFS", "hum60", -40.0),
    ("wind_-30dBFS", "wind", -30.0),
)

ITEM_COLUMNS = ("item", "kind", "category", "fold", "source", "file", "sha256", "n_blocks", "author", "licence",
                "licence_url", "original_url")

FSDD_AUTHOR = "Zohar Jackson (Jakobovski) and contributors"
FSDD_LICENCE = "CC-BY-SA-4.0"
FSDD_LICENCE_URL = "https://creativecommons.org/licenses/by-sa/4.0/"
FSDD_REPO = "https://github.com/Jakobovski/free-spoken-digit-dataset"
SYNTH_AUTHOR = "fieldear"
SYNTH_LICENCE = "CC0-1.0"
SYNTH_LICENCE_URL = "https://creativecommons.org/publicdomain/zero/1.0/"
MAAD_NOTICE = "LICENSE-scikit-maad-BSD-3.txt"
BUILDER_COMMAND = "python -m convert.tools.build_negatives --shared ../shared/data --out convert/data/negative_set"
NPZ_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass
class NegItem:
    """One source recording: ``path`` and ``sha`` are what ``dataset_embeddings`` needs."""

    kind: str
    category: str
    source: str
    file: str  # relative to the shared data dir ("" for synthetic items)
    path: Path
    sha: str
    author: str
    licence: str
    licence_url: str
    original_url: str
    fold: int | None = None
    extra: dict = field(default_factory=dict)


def _sha(path: Path) -> str:
    from runtime.model.bundle import sha256_file

    return sha256_file(path)


def _read_metadata(path: Path) -> dict[str, dict]:
    if not path.is_file():
        raise DatasetError(f"metadata missing: {path}", "pass --shared pointing at the project's shared/data folder")
    with open(path, newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def esc10_fold(path: Path) -> int:
    """The ESC-10 fold of ``esc10_<fold>-<source>-<take>.wav``."""
    return int(path.stem.split("_", 1)[1].split("-", 1)[0])


def forest_items(shared: Path) -> list[NegItem]:
    """The even-index soundscapes of the sorted forest_24h list (the odd ones are bench test beds)."""
    files = sorted((shared / "soundscapes" / "forest_24h").glob("*.wav"))
    if not files:
        raise DatasetError(f"no soundscapes in {shared / 'soundscapes' / 'forest_24h'}",
                           "pass --shared pointing at the project's shared/data folder")
    meta = _read_metadata(shared / "soundscapes" / "metadata.csv")
    out = []
    for p in files[0::2]:
        row = meta[f"forest_24h/{p.name}"]
        url = f"https://{row['source_repo']}/blob/{row['source_commit']}/{row['source_path']}"
        out.append(NegItem("bed", "ambient", "scikit-maad forest_24h", f"soundscapes/forest_24h/{p.name}", p,
                           _sha(p), row["author"], row["license"], row["license_url"], url))
    return out


def esc10_items(shared: Path) -> list[NegItem]:
    """Every ESC-10 clip of folds 1-4 (all classes); fold 5 is the benches' test fold."""
    root = shared / "esc10"
    meta = _read_metadata(root / "metadata.csv")
    files = sorted(root.glob("*/esc10_*.wav"))
    if not files:
        raise DatasetError(f"no ESC-10 clips in {root}", "pass --shared pointing at the project's shared/data folder")
    out = []
    for p in files:
        fold = esc10_fold(p)
        if fold not in ESC10_FOLDS:
            continue
        row = meta[f"{p.parent.name}/{p.name}"]
        out.append(NegItem("event", p.parent.name, "ESC-10 (K. J. Piczak)", f"esc10/{p.parent.name}/{p.name}", p,
                           _sha(p), row["author"], row["license"], row["license_url"], row["original_url"],
                           fold=fold))
    return out


def _fsdd_commit(shared: Path) -> str:
    note = shared / "fsdd" / "LICENSE_NOTE.txt"
    text = note.read_text(encoding="utf-8") if note.is_file() else ""
    if "CC BY-SA 4.0" not in text or "Zohar Jackson" not in text:
        raise DatasetError(f"FSDD licence note missing or unexpected: {note}",
                           "pass --shared pointing at the project's shared/data folder")
    m = re.search(r"commit ([0-9a-f]{40})", text)
    return m.group(1) if m else "master"


def fsdd_items(shared: Path) -> list[NegItem]:
    """FSDD utterances of ``NEGATIVE_SPEAKERS``: the lowest ``FSDD_PER_DIGIT`` indices per digit and speaker."""
    commit = _fsdd_commit(shared)
    out = []
    for speaker in NEGATIVE_SPEAKERS:
        for digit in range(10):
            folder = shared / "fsdd" / str(digit)
            files = sorted(folder.glob(f"{digit}_{speaker}_*.wav"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
            if len(files) < FSDD_PER_DIGIT:
                raise DatasetError(f"FSDD: only {len(files)} utterances of digit {digit} by {speaker} in {folder}",
                                   "pass --shared pointing at the project's shared/data folder")
            for p in files[:FSDD_PER_DIGIT]:
                out.append(NegItem("event", "speech", "FSDD", f"fsdd/{digit}/{p.name}", p, _sha(p), FSDD_AUTHOR,
                                   FSDD_LICENCE, FSDD_LICENCE_URL, f"{FSDD_REPO}/blob/{commit}/recordings/{p.name}",
                                   extra={"speaker": speaker, "digit": digit}))
    return out


# ---------------------------------------------------------------- synthetic beds


def _scale_to_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return x * (10.0 ** (dbfs / 20.0) / rms)


def _spectral_noise(rng: np.random.Generator, n: int, exponent: float, rate: int) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (pink 1, brown 2), no DC, above 10 Hz."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    gain = np.zeros_like(f)
    gain[f >= 10.0] = f[f >= 10.0] ** (-exponent / 2.0)
    return np.fft.irfft(spec * gain, n)


def synth_signal(name: str) -> np.ndarray:
    """The samples (float64, [-1, 1]) of synthetic item ``name``; its own seeded generator, so any one item
    can be remade alone."""
    index = [s[0] for s in SYNTHETIC].index(name)
    _, gen, dbfs = SYNTHETIC[index]
    rng = np.random.default_rng([SEED, index])
    n = int(SYNTH_RATE * SYNTH_SECONDS)
    t = np.arange(n) / SYNTH_RATE
    if gen == "silence":
        return np.zeros(n)
    if gen == "white":
        x = rng.standard_normal(n)
    elif gen == "pink":
        x = _spectral_noise(rng, n, 1.0, SYNTH_RATE)
    elif gen == "brown":
        x = _spectral_noise(rng, n, 2.0, SYNTH_RATE)
    elif gen in ("hum50", "hum60"):
        f0 = 50.0 if gen == "hum50" else 60.0
        # mains hum: fundamental plus decaying harmonics (odd ones stronger, as from transformers), random phases
        x = np.zeros(n)
        for k in range(1, 9):
            amp = (1.0 if k % 2 else 0.5) / k
            x += amp * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
    elif gen == "wind":
        from scipy.signal import butter, sosfiltfilt

        # low-passed noise (2nd order at 300 Hz) with slow gusts (0.1-0.5 Hz amplitude modulation)
        x = sosfiltfilt(butter(2, 300.0, fs=SYNTH_RATE, output="sos"), rng.standard_normal(n))
        env = np.ones(n)
        for fm in (0.13, 0.31, 0.47):
            env += 0.35 * np.sin(2 * np.pi * fm * t + rng.uniform(0, 2 * np.pi))
        x = x * np.clip(env, 0.1, None)
    else:  # pragma: no cover - SYNTHETIC is fixed
        raise ValueError(gen)
    return np.clip(_scale_to_dbfs(x, dbfs), -1.0, 1.0)


def synthetic_items(work: Path, names: tuple[str, ...] | None = None) -> list[NegItem]:
    """Write the synthetic beds (all, or ``names``) as WAVs under ``work``; their items."""
    work.mkdir(parents=True, exist_ok=True)
    out = []
    for name, _, _ in SYNTHETIC:
        if names is not None and name not in names:
            continue
        p = work / f"{name}.wav"
        write_wav(p, synth_signal(name), SYNTH_RATE)
        out.append(NegItem("bed", f"synthetic:{name}", "fieldear synthetic", "", p, _sha(p), SYNTH_AUTHOR,
                           SYNTH_LICENCE, SYNTH_LICENCE_URL, ""))
    return out


# ---------------------------------------------------------------- embedding and output


def collect_items(shared: Path, work: Path) -> list[NegItem]:
    """Every item of the set, in its fixed order: forest beds, ESC-10, FSDD, synthetic."""
    items = forest_items(shared) + esc10_items(shared) + fsdd_items(shared) + synthetic_items(work)
    log.info("negative set: %d items (%s)", len(items), dict(Counter(i.kind for i in items)))
    return items


def embed_items(items: list[NegItem], cache_dir: Path | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Backbone embeddings and block levels of every item (every block, in order), device frontend + int8."""
    from convert.families.embed import dataset_embeddings
    from runtime.features.frontend import BACKBONE
    from runtime.paths import BACKBONE_FILE

    embs, levels = dataset_embeddings(items, BACKBONE_FILE, BACKBONE, cache_dir=cache_dir, with_levels=True)
    for it, e in zip(items, embs):
        if len(e) == 0:
            raise DatasetError(f"no blocks from {it.path}", "the recording is too short for the backbone frontend")
    return embs, levels


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` with fixed zip timestamps, so the same arrays give the same bytes."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, val in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(val), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=NPZ_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    tmp.replace(path)


def item_rows(items: list[NegItem], embs: list[np.ndarray]) -> list[dict]:
    return [{"item": k, "kind": it.kind, "category": it.category, "fold": "" if it.fold is None else str(it.fold),
             "source": it.source, "file": it.file, "sha256": it.sha, "n_blocks": len(e), "author": it.author,
             "licence": it.licence, "licence_url": it.licence_url, "original_url": it.original_url}
            for k, (it, e) in enumerate(zip(items, embs))]


def write_outputs(out: Path, shared: Path, items: list[NegItem], embs: list[np.ndarray],
                  levels: list[np.ndarray]) -> dict:
    from runtime.features.frontend import BACKBONE
    from runtime.paths import BACKBONE_FILE

    out.mkdir(parents=True, exist_ok=True)
    emb = np.concatenate(embs).astype(np.float16)
    lev = np.concatenate(levels).astype(np.float32)
    idx = np.concatenate([np.full(len(e), k, dtype=np.int32) for k, e in enumerate(embs)])
    save_npz(out / "embeddings.npz", emb=emb, levels=lev, item=idx)
    rows = item_rows(items, embs)
    with open(out / "items.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=ITEM_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    blocks_by: Counter = Counter()
    blocks_kind: Counter = Counter()
    for it, e in zip(items, embs):
        blocks_by[it.category] += len(e)
        blocks_kind[it.kind] += len(e)
    manifest = {
        "what": "The built-in negative set: int8 aisfx backbone embeddings (every block, in order) of forest "
                "soundscapes, ESC-10 folds 1-4, FSDD speech and synthetic noise/hum beds, for training heads "
                "against 'none of my labels'; embeddings only, no audio.",
        "backbone_sha256": _sha(BACKBONE_FILE),
        "frontend": BACKBONE.to_dict(),
        "n_items": len(items),
        "n_blocks": len(emb),
        "embedding_dim": int(emb.shape[1]),
        "counts": {
            "items_per_kind": dict(sorted(Counter(i.kind for i in items).items())),
            "items_per_category": dict(sorted(Counter(i.category for i in items).items())),
            "blocks_per_kind": dict(sorted(blocks_kind.items())),
            "blocks_per_category": dict(sorted(blocks_by.items())),
        },
        "seed": SEED,
        "fsdd_speakers": list(NEGATIVE_SPEAKERS),
        "esc10_folds": list(ESC10_FOLDS),
        "builder": BUILDER_COMMAND,
        "make_target": "negatives",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    notice = shared / "soundscapes" / MAAD_NOTICE
    if not notice.is_file():
        raise DatasetError(f"scikit-maad licence notice missing: {notice}",
                           "pass --shared pointing at the project's shared/data folder")
    shutil.copyfile(notice, out / MAAD_NOTICE)
    (out / "ATTRIBUTION.md").write_text(attribution_text(manifest), encoding="utf-8")
    return manifest


def attribution_text(manifest: dict) -> str:
    c = manifest["counts"]["items_per_category"]
    n_esc = sum(v for k, v in c.items() if k not in ("ambient", "speech") and not k.startswith("synthetic:"))
    n_syn = sum(v for k, v in c.items() if k.startswith("synthetic:"))
    return f"""# Attribution: the built-in negative set

This directory holds **embeddings only** (no audio): every block of every item below was decoded by
`runtime.audio`, resampled to 44.1 kHz and turned into log-mel blocks by the device frontend
(`runtime.features.frontend.BACKBONE`), then embedded by the int8 aisfx backbone
(`runtime/models/aisfx/backbone_int8.tflite`, sha256 `{manifest['backbone_sha256']}`).
`embeddings.npz` holds the 512-d embeddings (float16), each block's level in dB and its row in
`items.csv`; `items.csv` names each item's source file, sha256, author, licence and original link.
Rebuild with `make negatives` (`{manifest['builder']}`); the build is deterministic.

## Sources

* **Forest soundscapes** ({c.get('ambient', 0)} x 10 s, kind `bed`, category `ambient`): the even-index files of
  `soundscapes/forest_24h/` (spruce forest, one recording every 15 min over 24 h), from the scikit-maad
  repository. Licence: BSD-3-Clause, (C) scikit-maad Developers; the notice is copied beside this file
  as `{MAAD_NOTICE}` and applies to the embeddings derived from these recordings.
* **ESC-10** ({n_esc} clips, 5 s, kind `event`, category = class): every clip of folds 1-4 of ESC-10.
  K. J. Piczak, "ESC: Dataset for Environmental Sound Classification", Proceedings of the 23rd ACM
  International Conference on Multimedia (ACM MM 2015), doi:10.1145/2733373.2806390. The clips come
  from Freesound under CC BY 3.0 or CC0; each clip's Freesound author, licence and original link are in
  `items.csv` (`author`, `licence`, `licence_url`, `original_url`). The clips were cut from the originals
  by Piczak, decoded and resampled to 16 kHz mono for ../shared/data, resampled to 44.1 kHz by the
  frontend, then embedded (two rooster clips under CC Sampling+ were never in ../shared/data).
* **Free Spoken Digit Dataset** ({c.get('speech', 0)} utterances, kind `event`, category `speech`): speakers
  {', '.join(manifest['fsdd_speakers'])}, the 10 lowest-index utterances of each digit. {FSDD_AUTHOR},
  "Free Spoken Digit Dataset", {FSDD_REPO}. Licence: CC BY-SA 4.0
  ({FSDD_LICENCE_URL}). The 8 kHz recordings (unchanged from upstream) were resampled to 44.1 kHz by
  the frontend and embedded. **The embeddings derived from FSDD are shared under CC BY-SA 4.0** (the rows of
  `embeddings.npz` whose item is an FSDD row of `items.csv`).
* **Synthetic beds** ({n_syn} x 10 s, kind `bed`, category `synthetic:<name>`): digital silence, white,
  pink, brown noise, 50/60 Hz mains hum with harmonics and wind-like low-passed noise, generated by the
  builder (numpy seed {manifest['seed']}, 16 kHz) and embedded from temporary WAVs. Made by fieldear,
  CC0-1.0.

Not used: `birdsong/great_tit`, `soundscapes/spinetail`, the odd forest soundscapes, ESC-10 fold 5 and
the FSDD speakers nicolas, theo and yweweler (the benchmarks test on them).
"""


def build(shared: Path, out: Path, cache_dir: Path | None = None) -> dict:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fieldear-negatives-") as tmp:
        items = collect_items(shared, Path(tmp))
        embs, levels = embed_items(items, cache_dir)
        manifest = write_outputs(out, shared, items, embs, levels)
    log.info("negative set: %d items, %d blocks written to %s (%.1f s)", manifest["n_items"], manifest["n_blocks"],
             out, time.monotonic() - t0)
    return manifest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m convert.tools.build_negatives", description=__doc__.split("\n")[0])
    p.add_argument("--shared", type=Path, required=True, help="the shared data folder (../shared/data)")
    p.add_argument("--out", type=Path, required=True, help="output folder (convert/data/negative_set)")
    p.add_argument("--cache", type=Path, default=None,
                   help="embedding cache folder (default: fieldear's user cache, ~/.cache/fieldear)")
    return p


def main(argv: list[str] | None = None) -> int:
    from convert.tools import run_tool

    args = build_parser().parse_args(argv)
    return run_tool(lambda: build(args.shared, args.out, args.cache), args.shared)


if __name__ == "__main__":
    sys.exit(main())
