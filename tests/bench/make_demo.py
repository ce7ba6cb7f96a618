"""Build runtime/demo/demo.wav (+ demo_truth.csv, ATTRIBUTION.md) from real recordings in ../shared/data.

A forest soundscape bed (four 10 s recordings, DC removed, cross-faded) with ESC-10 events (dog, rooster,
crying baby) and a great tit song mixed in at known times. Each event is trimmed to where it is active
(50 ms frames within 30 dB of its loudest frame) and that trimmed extent is the ground truth.

    python -m tests.bench.make_demo [--shared ../shared/data] [--out runtime/demo]

The mixing helpers are shared with tests/bench/bench_stream.py.
"""

from __future__ import annotations

import argparse
import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RATE = 16000
log = logging.getLogger("make_demo")

BED = ["S4A03895_20190522_060000.wav", "S4A03895_20190522_073000.wav", "S4A03895_20190522_090000.wav",
       "S4A03895_20190522_133000.wav"]
# (at seconds, folder, file, label) - fold-5 ESC-10 clips and one great tit song
EVENTS = [
    (3.0, "esc10", "dog/esc10_5-203128-A.wav", "dog"),
    (10.0, "esc10", "rooster/esc10_5-200334-A.wav", "rooster"),
    (17.5, "birdsong", "great_tit/pykanto_2021-B32-0415_05-11.wav", "great_tit"),
    (23.0, "esc10", "crying_baby/esc10_5-151085-A.wav", "crying_baby"),
    (30.0, "esc10", "dog/esc10_5-9032-A.wav", "dog"),
]
DURATION_S = 36.0
EVENT_RMS = 0.08  # active-part RMS of each mixed-in event (the bed's is about 0.005-0.01)


@dataclass(frozen=True)
class Placed:
    start_s: float
    end_s: float
    label: str
    source: str


def load(path: Path) -> np.ndarray:
    from runtime.audio.files import read_audio

    return read_audio(path, target_rate=RATE)[0].astype(np.float64)


def active_region(x: np.ndarray, rate: int = RATE, floor_db: float = -30.0, frame_s: float = 0.05) -> tuple[int, int]:
    """First and last sample of the frames within ``floor_db`` of the loudest frame."""
    n = max(1, int(frame_s * rate))
    frames = len(x) // n
    if frames == 0:
        return 0, len(x)
    rms = np.sqrt(np.mean((x[: frames * n] - np.mean(x)).reshape(frames, n) ** 2, axis=1))
    on = np.flatnonzero(rms >= rms.max() * 10 ** (floor_db / 20))
    return int(on[0] * n), int(min(len(x), (on[-1] + 1) * n))


def build_bed(paths: list[Path], seconds: float, fade_s: float = 0.5) -> np.ndarray:
    """DC-free recordings joined with linear cross-fades, cut to ``seconds``."""
    fade = int(fade_s * RATE)
    out = np.zeros(0)
    ramp = np.linspace(0.0, 1.0, fade)
    for p in paths:
        x = load(p)
        x = x - x.mean()
        if len(out) >= fade:
            out[-fade:] = out[-fade:] * (1 - ramp) + x[:fade] * ramp
            out = np.concatenate([out, x[fade:]])
        else:
            out = x
        if len(out) >= seconds * RATE:
            break
    if len(out) < seconds * RATE:
        raise ValueError(f"bed too short: {len(out) / RATE:.1f} s < {seconds} s")
    return out[: int(seconds * RATE)]


def mix_in(bed: np.ndarray, clip: np.ndarray, at_s: float, rms: float, label: str, source: str) -> Placed:
    """Add the active part of ``clip`` at ``at_s`` scaled to active RMS ``rms`` (10 ms fades); returns the truth."""
    a, b = active_region(clip)
    part = clip[a:b] - np.mean(clip[a:b])
    part = part * (rms / max(np.sqrt(np.mean(part**2)), 1e-9))
    f = min(int(0.01 * RATE), len(part) // 2)
    if f:
        part[:f] *= np.linspace(0, 1, f)
        part[-f:] *= np.linspace(1, 0, f)
    i = int(round(at_s * RATE))
    if i + len(part) > len(bed):
        raise ValueError(f"{source} at {at_s} s runs past the end")
    bed[i : i + len(part)] += part
    return Placed(round(i / RATE, 3), round((i + len(part)) / RATE, 3), label, source)


def write_truth(path: Path, placed: list[Placed]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["start_s", "end_s", "label"])
        for p in sorted(placed, key=lambda p: p.start_s):
            w.writerow([f"{p.start_s:.3f}", f"{p.end_s:.3f}", p.label])


def metadata(shared: Path) -> dict:
    rows = {}
    for folder in ("esc10", "birdsong", "soundscapes"):
        with open(shared / folder / "metadata.csv", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                rows[f"{folder}/{r['file']}"] = r
    return rows


def attribution(shared: Path, placed: list[Placed]) -> str:
    meta = metadata(shared)
    lines = [
        "# runtime/demo: attribution", "",
        "`demo.wav` (36 s, 16 kHz mono, 16-bit) was **cut, resampled and mixed** from the recordings below by",
        "`tests/bench/make_demo.py` (recordings taken from the project's `../shared/data`, which had decoded them to",
        "mono and resampled them to 16 kHz from the originals). The bed's DC offset was removed and the four bed",
        "recordings cross-faded; each event was trimmed to its active part, level-normalised and added at the time",
        "given in `demo_truth.csv` (start_s,end_s,label).", "",
        "## Forest bed (BSD-3-Clause, scikit-maad)", "",
        "scikit-maad developers (S. Haupert, J. Ulloa et al.), https://github.com/scikit-maad/scikit-maad",
        "(`data/indices/`), BSD-3-Clause; licence text in `LICENSE-scikit-maad-BSD-3.txt` next to this file.", "",
    ]
    for name in BED:
        r = meta[f"soundscapes/forest_24h/{name}"]
        lines.append(f"- `{name}`: {r['source_repo']} @ {r['source_commit'][:12]}, `{r['source_path']}`")
    lines += ["", "## Events", "", "| at (s) | label | file | author | licence | original |", "|---|---|---|---|---|---|"]
    for p in placed:
        r = meta[p.source]
        url = r.get("original_url") or f"{r.get('source_repo', '')} ({r.get('source_path', '')})"
        lines.append(f"| {p.start_s:.2f}-{p.end_s:.2f} | {p.label} | `{p.source}` | {r['author']} | "
                     f"{r['license']} | {url} |")
    lines += [
        "", "ESC-10 clips: K. J. Piczak, \"ESC: Dataset for Environmental Sound Classification\", ACM Multimedia 2015,",
        "doi:10.1145/2733373.2806390, from Freesound recordings by the authors above (CC0 1.0 or CC BY 3.0,",
        "https://creativecommons.org/licenses/by/3.0/).",
        "Great tit song: Nilo Merino Recalde, pykanto 0.1.8 bundled data (MIT); licence text in",
        "`LICENSE-pykanto-MIT.txt` next to this file.", "",
    ]
    return "\n".join(lines)


def build_demo(shared: Path, out: Path) -> list[Placed]:
    from runtime.audio.wav import write_wav

    bed = build_bed([shared / "soundscapes" / "forest_24h" / n for n in BED], DURATION_S)
    placed = []
    for at, folder, rel, label in EVENTS:
        placed.append(mix_in(bed, load(shared / folder / rel), at, EVENT_RMS, label, f"{folder}/{rel}"))
    peak = np.max(np.abs(bed))
    if peak > 0.98:
        bed *= 0.98 / peak
    out.mkdir(parents=True, exist_ok=True)
    write_wav(out / "demo.wav", bed.astype(np.float32), RATE)
    write_truth(out / "demo_truth.csv", placed)
    (out / "ATTRIBUTION.md").write_text(attribution(shared, placed), encoding="utf-8")
    for lic in ("soundscapes/LICENSE-scikit-maad-BSD-3.txt", "birdsong/LICENSE-pykanto-MIT.txt"):
        (out / Path(lic).name).write_text((shared / lic).read_text(encoding="utf-8"), encoding="utf-8")
    return placed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "runtime" / "demo")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for p in build_demo(args.shared, args.out):
        log.info("%7.2f %7.2f  %-12s %s", p.start_s, p.end_s, p.label, p.source)
    log.info("wrote %s (%.0f kB)", args.out / "demo.wav", (args.out / "demo.wav").stat().st_size / 1e3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
