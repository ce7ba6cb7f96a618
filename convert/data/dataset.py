"""Training data import: a folder with one sub-folder per label, or a CSV manifest.

Folder layout: ``DATA/<label>/**/<file>`` with any suffix in ``runtime.audio.AUDIO_EXTENSIONS``; hidden
files and folders (``.name``) are skipped. CSV manifest: a header row with ``path`` (or ``file``) and
``label`` and optionally ``fold`` and ``group``; further columns are ignored; relative paths are
relative to the CSV's folder. Folds are never guessed from file names: to use ESC-10's official folds,
write a manifest with a fold column (:func:`write_manifest`).

Every file is decoded once (in bounded memory) and checked. A file that is empty, unreadable, not
audio, shorter than ``MIN_SECONDS``, silent (peak below ``SILENCE_PEAK``) or holds NaN/inf samples
becomes a :class:`Problem`, is logged and left out; the import goes on. Each clip's ``sha`` is the
sha256 of its decoded float32 samples (and rate), so the same audio stored twice, in any encoding,
has the same sha: :mod:`convert.data.splits` keeps such duplicates on one side of every split.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.audio.files import AUDIO_EXTENSIONS, iter_chunks, probe, read_audio
from runtime.errors import AudioError, DatasetError

log = logging.getLogger(__name__)

MIN_SECONDS = 0.1  # shorter clips are rejected ("too_short")
SILENCE_PEAK = 1e-4  # clips whose absolute peak is below this are rejected ("silent")
MIN_CLIPS_PER_LABEL = 5  # fewer: the label's CV figures rest on a handful of clips (warned, not refused)
IMBALANCE_RATIO = 3.0  # warn when the largest class has more than this times the clips of the smallest
PROGRESS_EVERY = 500  # log progress every this many files (imports of that size or more)
MANIFEST_COLUMNS = ("path", "label", "fold", "group")
PROBLEM_KINDS = ("empty", "unreadable", "not_audio", "too_short", "silent", "non_finite")


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    fold: str | None  # from the manifest's fold column, else None
    group: str | None  # from the manifest's group column, else None
    duration_s: float
    sha: str  # sha256 of the decoded samples: equal for the same audio in any encoding


@dataclass(frozen=True)
class Problem:
    path: Path
    kind: str  # one of PROBLEM_KINDS
    message: str


@dataclass
class Dataset:
    items: list[Clip]
    labels: list[str]  # sorted
    problems: list[Problem] = field(default_factory=list)
    source: Path | None = None
    target_rate: int | None = None  # rate that read() decodes to (None: each file's own rate)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(c.label for c in self.items)
        return {label: found[label] for label in self.labels}

    @property
    def fingerprint(self) -> str:
        """sha256 over the sorted (sha, label) pairs: the same audio and labels give the same value."""
        digest = hashlib.sha256()
        for sha, label in sorted((c.sha, c.label) for c in self.items):
            digest.update(f"{sha}\t{label}\n".encode())
        return digest.hexdigest()

    @property
    def duplicates(self) -> list[list[int]]:
        """Groups (indices into items) of clips with identical audio; only groups of two or more."""
        by_sha: dict[str, list[int]] = {}
        for i, clip in enumerate(self.items):
            by_sha.setdefault(clip.sha, []).append(i)
        return [group for group in by_sha.values() if len(group) > 1]

    def y(self) -> np.ndarray:
        """Label index (into ``labels``) of every clip."""
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[c.label] for c in self.items], dtype=np.int64)

    def read(self, i: int) -> tuple[np.ndarray, int]:
        """Samples (float32 mono) of clip ``i`` at ``target_rate`` (or the file's own rate), and the rate."""
        return read_audio(self.items[i].path, target_rate=self.target_rate)

    def summary(self) -> dict:
        """Counts, problems and duplicates, JSON-ready (the report's dataset section)."""
        dups = self.duplicates
        counts = self.counts
        return {
            "source": str(self.source) if self.source is not None else None,
            "n_clips": len(self.items),
            "labels": list(self.labels),
            "counts": counts,
            "fingerprint": self.fingerprint,
            "hours": round(sum(c.duration_s for c in self.items) / 3600.0, 4),
            "imbalance": imbalance_ratio(counts),
            "has_folds": all(c.fold is not None for c in self.items),
            "has_groups": any(c.group is not None for c in self.items),
            "problems": [{"path": str(p.path), "kind": p.kind, "message": p.message} for p in self.problems],
            "problem_counts": dict(Counter(p.kind for p in self.problems)),
            "duplicates": [[str(self.items[i].path) for i in group] for group in dups],
            "n_duplicate_clips": sum(len(g) - 1 for g in dups),
        }


def imbalance_ratio(counts: dict[str, int]) -> float:
    values = [n for n in counts.values() if n > 0]
    return float(max(values) / min(values)) if values else 0.0


# ---------------------------------------------------------------- finding the files


def _scan_folder(root: Path) -> list[tuple[Path, str, str | None, str | None]]:
    entries = []
    ignored = Counter()
    loose = 0
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = 0
        for dirpath, dirnames, filenames in os.walk(sub):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if name.startswith("."):
                    continue
                if path.suffix.lower() in AUDIO_EXTENSIONS:
                    entries.append((path, sub.name, None, None))
                    found += 1
                else:
                    ignored[path.suffix.lower() or "(no suffix)"] += 1
        if found == 0:
            log.warning("folder %s holds no audio files; no label %r", sub, sub.name)
    for path in root.iterdir():
        if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
            loose += 1
    if loose:
        log.warning(
            "%d audio file(s) directly in %s ignored: put each file in a sub-folder named after its label",
            loose, root,
        )
    if ignored:
        log.info("ignored files that are not audio by suffix: %s", ", ".join(f"{k} x{v}" for k, v in ignored.items()))
    return entries


def _read_manifest(csv_path: Path) -> list[tuple[Path, str, str | None, str | None]]:
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise DatasetError(f"{csv_path}: not a UTF-8 text file", "save the manifest as UTF-8 CSV") from None
    except OSError as exc:
        raise DatasetError(f"{csv_path}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise DatasetError(f"{csv_path}: empty manifest", "first line: path,label[,fold][,group]")
    header = [h.strip().lower() for h in rows[0]]
    if "path" not in header and "file" in header:
        header[header.index("file")] = "path"
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise DatasetError(
            f"{csv_path}: header has no {' or '.join(repr(c) for c in missing)} column "
            f"(found: {', '.join(repr(h) for h in header) or 'nothing'})",
            "the first line must name the columns: path,label[,fold][,group]",
        )
    col = {name: header.index(name) for name in MANIFEST_COLUMNS if name in header}
    entries = []
    absent = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line

        def cell(name: str) -> str:
            i = col.get(name)
            return row[i].strip() if i is not None and i < len(row) else ""

        path_text, label = cell("path"), cell("label")
        if not path_text or not label:
            what = "path" if not path_text else "label"
            raise DatasetError(
                f"{csv_path}, row {line_no}: empty {what} ({','.join(row)!r})",
                "every row needs a path and a label",
            )
        path = Path(path_text)
        if not path.is_absolute():
            path = base / path
        if not path.is_file():
            absent.append(f"row {line_no}: {path_text}")
            continue
        entries.append((path, label, cell("fold") or None, cell("group") or None))
    if absent:
        shown = "; ".join(absent[:5]) + (f"; and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise DatasetError(
            f"{csv_path}: {len(absent)} row(s) name files that do not exist: {shown}",
            f"paths are relative to {base}; fix or remove those rows",
        )
    if not entries:
        raise DatasetError(f"{csv_path}: the manifest lists no files", "add rows: path,label[,fold][,group]")
    return entries


# ---------------------------------------------------------------- checking one file


def _problem_kind(exc: AudioError) -> str:
    text = exc.message.lower()
    if text.startswith("empty") or "no audio data" in text:
        return "empty"
    if text.startswith("not ") or "looks like" in text:
        return "not_audio"
    if "non-finite" in text:
        return "non_finite"
    return "unreadable"


def check_file(path: Path) -> tuple[float, str] | Problem:
    """Decode one file; (duration_s, sha) when usable, else the Problem."""
    try:
        info = probe(path)
        digest = hashlib.sha256(f"rate={info.sample_rate}\n".encode())
        frames = 0
        peak = 0.0
        for chunk in iter_chunks(path, target_rate=None, chunk_seconds=10.0):
            chunk = np.ascontiguousarray(chunk, dtype="<f4")
            digest.update(chunk.tobytes())
            frames += len(chunk)
            if len(chunk):
                peak = max(peak, float(np.max(np.abs(chunk))))
    except AudioError as exc:
        message = exc.message + (f" ({exc.hint})" if exc.hint else "")
        return Problem(path, _problem_kind(exc), message)
    except OSError as exc:
        return Problem(path, "unreadable", f"cannot read: {exc.strerror or exc}")
    if frames == 0:
        return Problem(path, "empty", "no audio samples")
    duration = frames / info.sample_rate
    if duration < MIN_SECONDS:
        return Problem(path, "too_short", f"{duration * 1000:.0f} ms long, shorter than {MIN_SECONDS * 1000:.0f} ms")
    if peak < SILENCE_PEAK:
        return Problem(path, "silent", f"peak {peak:.1e} below {SILENCE_PEAK:.0e}: digital silence")
    return duration, digest.hexdigest()


# ---------------------------------------------------------------- import


def load_dataset(source: str | os.PathLike, target_rate: int | None = None) -> Dataset:
    """Import and check a labelled dataset (folder per label, or a CSV manifest). See the module doc."""
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source}: no such file or folder", "give a folder with one sub-folder per label, or a CSV")
    if source.is_dir():
        entries = _scan_folder(source)
        if not entries:
            raise DatasetError(
                f"{source}: no audio files found in its sub-folders",
                "put the recordings in one sub-folder per label, e.g. DATA/dog/*.wav, DATA/rain/*.wav",
            )
    else:
        if source.suffix.lower() != ".csv":
            raise DatasetError(f"{source}: not a folder or a .csv manifest", "give DATA/ or manifest.csv")
        entries = _read_manifest(source)

    labels_listed = sorted({label for _, label, _, _ in entries})
    if len(labels_listed) < 2:
        raise DatasetError(
            f"{source}: only one label ({labels_listed[0]!r}); a classifier needs at least two",
            "add a sub-folder (or manifest rows) for another class, e.g. background sounds",
        )

    items: list[Clip] = []
    problems: list[Problem] = []
    started = time.monotonic()
    total = len(entries)
    for n, (path, label, fold, group) in enumerate(entries, start=1):
        checked = check_file(path)
        if isinstance(checked, Problem):
            problems.append(checked)
            log.warning("skipping %s: %s: %s", path, checked.kind, checked.message)
        else:
            duration, sha = checked
            items.append(Clip(path, label, fold, group, duration, sha))
        if total >= PROGRESS_EVERY and (n % PROGRESS_EVERY == 0 or n == total):
            log.info("checked %d/%d files (%.0f s)", n, total, time.monotonic() - started)

    if problems:
        kinds = Counter(p.kind for p in problems)
        log.warning(
            "%d of %d files left out: %s", len(problems), total, ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        )
    if not items:
        raise DatasetError(
            f"{source}: none of the {total} files is usable ({len(problems)} problems, see the warnings above)",
            "check that the files are audio recordings with sound in them",
        )

    dataset = Dataset(items, sorted({c.label for c in items}), problems, source, target_rate)
    _check_labels(dataset, labels_listed)
    _warn_about(dataset)
    return dataset


def _check_labels(dataset: Dataset, labels_listed: list[str]) -> None:
    counts = dataset.counts
    lost = [label for label in labels_listed if label not in counts]
    few = {label: n for label, n in counts.items() if n < 2}
    for label in lost:
        few[label] = 0
    if few:
        text = ", ".join(f"{label!r} has {n}" for label, n in sorted(few.items()))
        raise DatasetError(
            f"too few usable clips: {text}; cross-validation needs at least 2 clips per label "
            "(5 for the default 5 folds)",
            "add recordings for those labels or remove their folders/rows",
        )
    if len(counts) < 2:
        raise DatasetError("only one label has usable clips; a classifier needs at least two")


def count_warnings(counts: dict[str, int]) -> list[str]:
    """The warnings about clips per label that train logs (few clips; imbalance); the studio shows the same."""
    warnings = []
    few = {label: n for label, n in counts.items() if n < MIN_CLIPS_PER_LABEL}
    if few:
        warnings.append(
            f"few clips: {', '.join(f'{label!r} has {n}' for label, n in sorted(few.items()))} (fewer than "
            f"{MIN_CLIPS_PER_LABEL}); its scores rest on very few examples, add recordings if you can"
        )
    ratio = imbalance_ratio(counts)
    if ratio > IMBALANCE_RATIO:
        biggest = max(counts, key=counts.get)
        smallest = min(counts, key=counts.get)
        warnings.append(
            f"classes are imbalanced: {biggest!r} has {counts[biggest]} clips, {smallest!r} only "
            f"{counts[smallest]} ({ratio:.1f}x); scores favour the big class"
        )
    return warnings


def _warn_about(dataset: Dataset) -> None:
    counts = dataset.counts
    log.info(
        "dataset: %d clips, %d labels (%s)", len(dataset), len(counts), ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    for warning in count_warnings(counts):
        log.warning("%s", warning)
    for group in dataset.duplicates:
        clips = [dataset.items[i] for i in group]
        names = ", ".join(str(c.path) for c in clips)
        if len({c.label for c in clips}) > 1:
            log.warning("the same audio has different labels (%s): %s", "/".join(sorted({c.label for c in clips})), names)
        else:
            log.warning("duplicate audio (kept together in every split): %s", names)
    has_fold = [c.fold is not None for c in dataset.items]
    if any(has_fold) and not all(has_fold):
        log.warning("only %d of %d clips have a fold; folds ignored", sum(has_fold), len(has_fold))
    if not any(has_fold) and sum(c.path.name.startswith("esc10_") for c in dataset.items) > len(dataset) // 2:
        log.info(
            "file names look like ESC-10; its official folds are used only from a CSV manifest "
            "path,label,fold (see the README)"
        )


def write_manifest(rows, path: str | os.PathLike) -> Path:
    """Write a CSV manifest. ``rows``: dicts with path, label and optionally fold, group, or tuples in
    that order (a Clip works too). Paths under the CSV's folder are written relative to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    table = []
    for row in rows:
        if isinstance(row, Clip):
            values = [row.path, row.label, row.fold, row.group]
        elif isinstance(row, dict):
            values = [row.get(name) for name in MANIFEST_COLUMNS]
        else:
            values = list(row) + [None] * (4 - len(row))
        if values[0] is None or values[1] is None:
            raise ValueError(f"manifest row without path or label: {row!r}")
        file_path = Path(values[0]).resolve()
        try:
            shown = file_path.relative_to(base).as_posix()
        except ValueError:
            shown = str(file_path)
        table.append([shown, values[1]] + ["" if v is None else str(v) for v in values[2:4]])
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(table)
    os.replace(tmp, path)
    return path
