"""A seeded fuzz corpus (issue 17, item 8): WAV and FLAC files from real clips with mutated headers and bodies.
`fieldear batch` over them must finish within a time limit, with one row per file, bounded peak memory and no
traceback. CI runs a subset (FIELDEAR_FUZZ_N files, default 120); `make bench` can run more."""

from __future__ import annotations

import csv
import io
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_path

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]
N_FILES = int(os.environ.get("FIELDEAR_FUZZ_N", "120"))
TIME_LIMIT_S = 300.0  # the whole batch; about 30 s here for 120 files
PEAK_RSS_MB = 1024  # any one process of the batch
# runs a command and prints the peak RSS (kB) of its processes: this test's own children include earlier tests'
PEAK_OF = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def _float_wav(x: np.ndarray, rate: int) -> bytes:
    """A 32-bit IEEE-float WAV (format tag 3), written by hand: the tflite-runtime lane has no soundfile."""
    data = np.asarray(x, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + b"fmt "
            + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def _seeds() -> list[tuple[str, bytes]]:
    """Real clips as 16-bit WAV, float WAV and (where soundfile is installed) FLAC: the corpus's starting points."""
    from runtime.audio.files import read_audio

    try:
        import soundfile as sf
    except ImportError:
        sf = None
    shared = shared_path()
    picks = [sorted((shared / "esc10" / "dog").glob("*.wav"))[0],
             sorted((shared / "birdsong" / "great_tit").glob("*.wav"))[0],
             sorted((shared / "fsdd" / "3").glob("*.wav"))[0]]
    seeds = []
    for p in picks:
        x, rate = read_audio(p)
        seeds += [("wav", p.read_bytes()), ("wav", _float_wav(x, rate))]
        if sf is not None:
            buf = io.BytesIO()
            sf.write(buf, x, rate, format="FLAC", subtype="PCM_16")
            seeds.append(("flac", buf.getvalue()))
    return seeds


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One or a few header or body mutations: flipped bytes, absurd fmt fields, lying sizes, cuts, garbage."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(7))
        if kind == 0:  # flip bytes in the first 64 (RIFF/fmt/FLAC STREAMINFO)
            for i in rng.integers(0, min(64, len(b)), size=int(rng.integers(1, 6))):
                b[i] = int(rng.integers(256))
        elif kind == 1 and len(b) > 28:  # WAV fmt: sample rate
            b[24:28] = struct.pack("<I", int(rng.choice([0, 1, 7, 999, 1_000_003, 2**31 - 1, 2**32 - 1])))
        elif kind == 2 and len(b) > 24:  # WAV fmt: channels / bits per sample
            b[22:24] = struct.pack("<H", int(rng.choice([0, 3, 255, 65535])))
            b[34:36] = struct.pack("<H", int(rng.choice([0, 1, 7, 12, 64, 65535])))
        elif kind == 3 and len(b) > 8:  # a chunk size that lies
            at = int(rng.choice([4, 16, 40])) if len(b) > 44 else 4
            b[at:at + 4] = struct.pack("<I", int(rng.choice([0, 1, 2**31, 2**32 - 1])))
        elif kind == 4:  # cut anywhere
            b = b[: int(rng.integers(0, len(b) + 1))]
        elif kind == 5:  # garbage appended or inserted
            junk = rng.integers(0, 256, size=int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
            at = int(rng.integers(0, len(b) + 1))
            b[at:at] = junk
        else:  # body bytes randomised
            if len(b) > 100:
                start = int(rng.integers(44, len(b)))
                n = min(len(b) - start, int(rng.integers(1, 20000)))
                b[start:start + n] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
    return bytes(b)


def write_corpus(out: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    seeds = _seeds()
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(n):
        ext, data = seeds[k % len(seeds)]
        path = out / f"fuzz_{k:04d}.{ext}"
        path.write_bytes(_mutate(data, rng))
        files.append(path)
    return files


def test_batch_over_a_mutated_corpus_finishes_with_a_row_per_file_and_no_traceback(tmp_path):
    files = write_corpus(tmp_path / "corpus", N_FILES)
    out = tmp_path / "rows.csv"
    t = time.monotonic()
    run = subprocess.run([sys.executable, "-c", PEAK_OF, sys.executable, "-m", "runtime.cli", "-q", "batch", str(tmp_path / "corpus"), "--out",
                          str(out), "--jobs", "2", "--file-timeout", "60"],
                         cwd=ROOT, capture_output=True, text=True, timeout=TIME_LIMIT_S)
    wall = time.monotonic() - t
    assert run.returncode in (0, 1), run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    peak_mb = int(run.stderr.strip().splitlines()[-1]) / 1024
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in files)
    assert all(r["error"] or r["label"] for r in rows)
    assert not any("Traceback" in r["error"] for r in rows)
    assert peak_mb < PEAK_RSS_MB, f"peak RSS {peak_mb:.0f} MB"
    errors = sum(bool(r["error"]) for r in rows)
    print(f"fuzz: {len(rows)} files, {errors} error rows, {wall:.1f} s, peak RSS {peak_mb:.0f} MB")
