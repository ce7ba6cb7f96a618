"""Batch prediction: every audio file under some folders -> one row per file in a CSV or JSONL file.

* The listing is a generator (``os.scandir``, one directory at a time, sorted), so a folder of many
  thousand files starts at once and costs no more than one pass.
* ``jobs > 1`` runs worker processes (``WorkerPool``, a ``ProcessPoolExecutor``); each loads the model once
  in its initializer. A worker that dies (OOM killer, crash) or a file over ``file_timeout_s`` gives that
  file an error row; the pool is replaced and the batch goes on. Rows are written by the parent as they
  arrive and flushed one by one, so a killed run loses nothing that was written, and ``resume`` skips
  every file already in the output.
* A file that cannot be read gets a row with its ``error`` and the run goes on; the caller exits
  non-zero if any row failed.

Row columns: path, label, score, error, duration_s, n_blocks, model_sha, score_<label> for every label.
With ``unknown`` (``fieldear batch --unknown``) the label of an unknown clip (runtime.predict.predict.is_unknown)
is ``unknown`` and a last column ``known`` says 1 or 0 (empty in an error row); the score columns stay the
classifier's raw scores. The header tells the two kinds of file apart (``--resume`` refuses to mix them).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from runtime.errors import FieldearError

log = logging.getLogger(__name__)

# With --jobs > 1: a file still not done after this long is an error row and its worker is replaced.
DEFAULT_FILE_TIMEOUT_S = 600.0

BASE_COLUMNS = ["path", "label", "score", "error", "duration_s", "n_blocks", "model_sha"]
SCORE_PREFIX = "score_"
KNOWN_COLUMN = "known"  # with --unknown: 1 for a clip of the labels, 0 for an unknown one


def columns_for(labels: list[str], unknown: bool = False) -> list[str]:
    return BASE_COLUMNS + [SCORE_PREFIX + lab for lab in labels] + ([KNOWN_COLUMN] if unknown else [])


def check_unknown_labels(labels: list[str]) -> None:
    """--unknown needs the word: a model with a label named ``unknown`` cannot use it."""
    from runtime.evaluate.clip_eval import UNKNOWN

    if UNKNOWN in labels:
        raise FieldearError(f"the model has a label named {UNKNOWN!r}; --unknown cannot tell it from an unknown clip",
                            "run without --unknown")


def output_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise FieldearError(f"cannot tell the output format from {str(path)!r}", "name the output *.csv or *.jsonl")


# ---------------------------------------------------------------- listing


@dataclass(frozen=True)
class Item:
    path: str
    error: str = ""  # set when the listing already knows the file is unusable


def iter_inputs(inputs: Iterable[str | os.PathLike], extensions: frozenset[str] | None = None) -> Iterator[Item]:
    """Audio files under ``inputs`` (files are taken as given; folders recursively, by extension).

    A directory whose name looks like an audio file (``x.wav/``) is yielded as an error item rather
    than entered. Directory symlinks are followed once (loops are skipped).
    """
    if extensions is None:
        from runtime.audio.files import AUDIO_EXTENSIONS

        extensions = AUDIO_EXTENSIONS
    seen_dirs: set[tuple[int, int]] = set()
    for raw in inputs:
        path = str(raw)
        if os.path.isdir(path):
            yield from _walk(path, extensions, seen_dirs)
        elif os.path.exists(path):
            yield Item(path)
        else:
            yield Item(path, "file not found")


def _walk(root: str, extensions: frozenset[str], seen: set[tuple[int, int]]) -> Iterator[Item]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as exc:
            yield Item(folder, f"cannot read folder: {exc.strerror or exc}")
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            log.debug("skipping %s: already visited (symlink loop?)", folder)
            continue
        seen.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield Item(folder, f"cannot read folder: {exc.strerror or exc}")
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            is_audio_name = os.path.splitext(entry.name)[1].lower() in extensions
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir and is_audio_name:
                yield Item(entry.path, "is a directory, not an audio file")
            elif is_dir:
                subdirs.append(entry.path)
            elif is_audio_name:
                yield Item(entry.path)
        stack.extend(reversed(subdirs))  # depth first, in name order


# ---------------------------------------------------------------- rows


def make_row(pred, model_sha: str, unknown: bool = False) -> dict:
    row = {"path": pred.path, "label": pred.shown_label(unknown), "score": round(pred.score, 6), "error": "",
           "duration_s": round(pred.duration_s, 3), "n_blocks": pred.n_blocks, "model_sha": model_sha}
    for lab, s in zip(pred.labels, pred.scores):
        row[SCORE_PREFIX + lab] = round(float(s), 6)
    if unknown:
        row[KNOWN_COLUMN] = 0 if pred.unknown else 1
    return row


def error_row(path: str, error: str, model_sha: str, labels: list[str]) -> dict:
    row = {"path": path, "label": "", "score": "", "error": error, "duration_s": "", "n_blocks": "",
           "model_sha": model_sha}
    for lab in labels:
        row[SCORE_PREFIX + lab] = ""
    row[KNOWN_COLUMN] = ""  # written only when the file has the column
    return row


def predict_row(model, item: Item, model_sha: str, unknown: bool = False) -> dict:
    """One output row for one item; never raises for a bad file."""
    from runtime.predict.predict import predict_file, short_error

    if item.error:
        return error_row(item.path, item.error, model_sha, model.labels)
    try:
        return make_row(predict_file(model, item.path), model_sha, unknown)
    except Exception as exc:  # a per-file failure must not stop the batch
        log.debug("%s failed", item.path, exc_info=True)
        return error_row(item.path, short_error(exc), model_sha, model.labels)


# worker-process state: one model per process, loaded by the pool initializer
_WORKER: dict = {}


def _worker_init(model_dir: str | None, threads: int | None, unknown: bool = False) -> None:
    from runtime.model.model import Model

    logging.getLogger().setLevel(logging.WARNING)  # the parent reports; workers stay quiet
    _WORKER["unknown"] = bool(unknown)
    try:
        _WORKER["model"] = Model.load(model_dir, threads=threads)
        _WORKER["sha"] = _WORKER["model"].bundle.sha256
    except FieldearError as exc:  # raising here would make the pool restart the worker forever
        _WORKER["error"] = exc


def _worker_row(item: Item) -> dict:
    if "error" in _WORKER:
        raise _WORKER["error"]
    return predict_row(_WORKER["model"], item, _WORKER["sha"], _WORKER.get("unknown", False))


class WorkerPool:
    """Rows of items from worker processes, at most ``jobs`` in flight (so each is timed from its start).

    When the pool breaks, the worker that died is not known: the items it had in flight are retried one at a
    time in a fresh pool, and an item that breaks a pool on its own is the culprit (an error row).
    """

    def __init__(self, jobs: int, initargs: tuple, file_timeout_s: float, error_row, clock=time.monotonic):
        self.jobs, self.initargs, self.timeout_s = jobs, initargs, float(file_timeout_s)
        self.error_row, self.clock = error_row, clock
        self.suspects: list[Item] = []  # in flight when a worker died: retried one at a time
        self.retry: list[Item] = []  # in flight when another file timed out: retried as usual
        self._pool = None

    def _new_pool(self):
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(self.jobs, initializer=_worker_init, initargs=self.initargs)

    def _kill_pool(self) -> None:
        for proc in list(getattr(self._pool, "_processes", {}).values()):  # no public way to stop a busy worker
            proc.kill()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def run(self, items: Iterator[Item]) -> Iterator[dict]:
        from concurrent.futures import FIRST_COMPLETED, wait

        flight: dict = {}  # future -> (item, started)
        self._new_pool()
        try:
            while True:
                self._fill(flight, items)
                if not flight:
                    return
                done, _ = wait(flight, timeout=self._wait_s(flight), return_when=FIRST_COMPLETED)
                yield from self._collect(flight, done)
        finally:
            if self._pool is not None:
                self._kill_pool()

    def _fill(self, flight: dict, items: Iterator[Item]) -> None:
        limit = 1 if self.suspects else self.jobs  # suspects run alone: a break then names its file
        while len(flight) < limit:
            queue = self.suspects or self.retry
            item = queue.pop(0) if queue else next(items, None)
            if item is None:
                return
            flight[self._pool.submit(_worker_row, item)] = (item, self.clock())

    def _wait_s(self, flight: dict) -> float:
        oldest = min(started for _, started in flight.values())
        return max(0.01, oldest + self.timeout_s - self.clock())

    def _collect(self, flight: dict, done) -> Iterator[dict]:
        from concurrent.futures.process import BrokenProcessPool

        alone = len(flight) == 1
        broken: list[Item] = []
        for fut in done:
            item, _ = flight.pop(fut)
            try:
                yield fut.result()
            except BrokenProcessPool:
                broken.append(item)
        late = [f for f, (_, started) in flight.items() if self.clock() - started >= self.timeout_s]
        for fut in late:
            item, _ = flight.pop(fut)
            log.warning("%s: no result after %.0f s; its worker is replaced", item.path, self.timeout_s)
            yield self.error_row(item, f"timed out after {self.timeout_s:g} s")
        rest = [item for item, _ in flight.values()]
        if broken and alone:
            log.warning("%s: the worker process died on this file", broken[0].path)
            yield self.error_row(broken[0], "worker process died (out of memory or a crash)")
        elif broken:
            self.suspects += broken + rest
        elif late:
            self.retry += rest
        if broken or late:
            flight.clear()
            self._kill_pool()
            self._new_pool()


# ---------------------------------------------------------------- output and resume


def _norm(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def _drop_partial_line(path: Path) -> None:
    """A run killed mid-write may leave half a row at the end: cut it off."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        back = min(size, 1 << 20)
        f.seek(size - back)
        tail = f.read(back)
        cut = tail.rfind(b"\n")
        keep = size - back + cut + 1 if cut >= 0 else 0
        log.warning("%s: dropping an incomplete last row (%d bytes)", path, size - keep)
        f.truncate(keep)


def read_done(out: Path, fmt: str, columns: list[str], model_sha: str) -> set[str]:
    """Normalised paths already in an output file; refuses a file written by another model."""
    _drop_partial_line(out)
    done: set[str] = set()
    with open(out, newline="", encoding="utf-8") as f:
        if fmt == "csv":
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return done
            if header != columns:
                if header == columns + [KNOWN_COLUMN] or header + [KNOWN_COLUMN] == columns:
                    raise FieldearError(f"{out}: it was written {'with' if len(header) > len(columns) else 'without'}"
                                        " --unknown", "resume with the same flags, or write to a new --out")
                raise FieldearError(f"{out}: its columns do not match this model's labels",
                                    "resume with the same --model, or write to a new --out")
            rows = (dict(zip(header, r)) for r in reader)
        else:
            rows = (_json_row(out, n, line) for n, line in enumerate(f, 1) if line.strip())
        for row in rows:
            sha = row.get("model_sha") or ""
            if fmt != "csv" and row.get("path") and (KNOWN_COLUMN in row) != (KNOWN_COLUMN in columns):
                raise FieldearError(f"{out}: it was written {'with' if KNOWN_COLUMN in row else 'without'} --unknown",
                                    "resume with the same flags, or write to a new --out")
            if sha and sha != model_sha:
                raise FieldearError(f"{out}: rows were written by another model ({sha[:12]}, not {model_sha[:12]})",
                                    "resume with the same --model, or write to a new --out")
            if row.get("path"):
                done.add(_norm(row["path"]))
    return done


def _json_row(out: Path, n: int, line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        row = None
    if not isinstance(row, dict):
        raise FieldearError(f"{out}: line {n} is not a JSON row", "repair or remove that line, or write to a new --out")
    return row


class RowWriter:
    """Append rows to CSV/JSONL, flushing each one."""

    def __init__(self, f: TextIO, fmt: str, columns: list[str], write_header: bool):
        self.f, self.fmt, self.columns = f, fmt, columns
        self._csv = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore") if fmt == "csv" else None
        if self._csv is not None and write_header:
            self._csv.writeheader()
            f.flush()

    def write(self, row: dict) -> None:
        if self._csv is not None:
            self._csv.writerow(row)
        else:
            self.f.write(json.dumps({k: row.get(k, "") for k in self.columns}, ensure_ascii=False) + "\n")
        self.f.flush()


# ---------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, a line every 10 s otherwise)."""

    def __init__(self, stream: TextIO | None = None, clock=time.monotonic, width: int = 28):
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = clock()
        self._last = -1e9
        self._drawn = False

    def update(self, done: int, total: int, failed: int, listing_done: bool, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last < (0.2 if self.tty else 10.0):
            return
        self._last = now
        elapsed = now - self.start
        frac = done / total if total else 0.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        total_text = f"{total}" if listing_done else f"{total}+"
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f", ~{(total - done) / rate:.0f} s left" if listing_done and rate > 0 and done < total else ""
        text = f"[{bar}] {done}/{total_text} files, {failed} failed, {elapsed:.0f} s{eta}"
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------- the run


@dataclass
class BatchSummary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    out: str = ""

    @property
    def x_realtime(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def text(self) -> str:
        parts = [f"{self.ok} files ok, {self.failed} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped (already in the output)")
        return (", ".join(parts) + f"; {self.audio_s:.1f} s of audio in {self.wall_s:.1f} s wall "
                f"({self.x_realtime:.0f}x real time); rows in {self.out}")


def run_batch(inputs: list[str], out: str | os.PathLike, model_dir: str | None = None, jobs: int = 1,
              resume: bool = False, force: bool = False, threads: int | None = None,
              progress: Progress | None = None, clock=time.monotonic,
              file_timeout_s: float = DEFAULT_FILE_TIMEOUT_S, unknown: bool = False) -> BatchSummary:
    """Predict every audio file under ``inputs`` into ``out``; returns the summary (see module doc).
    ``unknown``: label ``unknown`` for unknown clips and a ``known`` column (``fieldear batch --unknown``)."""
    from runtime.model.bundle import load_bundle

    start = clock()
    out = Path(out)
    fmt = output_format(out)
    bundle = load_bundle(model_dir)  # a bad model fails here, before any work
    sha = bundle.sha256
    if unknown:
        check_unknown_labels(bundle.labels)
    columns = columns_for(bundle.labels, unknown)
    jobs = max(1, int(jobs))
    if threads is None and jobs > 1:
        threads = 1  # one interpreter thread per process: the processes already fill the cores
    if out.exists() and out.is_dir():
        raise FieldearError(f"output path is a directory: {out}", "name a file: --out preds.csv")

    done: set[str] = set()
    if out.exists() and out.stat().st_size > 0:
        if resume:
            done = read_done(out, fmt, columns, sha)
            log.info("resuming %s: %d files already done", out, len(done))
        elif not force:
            raise FieldearError(f"output file exists: {out}", "pass --resume to continue it or --force to overwrite it")
    write_header = not (resume and out.exists() and out.stat().st_size > 0)
    out.parent.mkdir(parents=True, exist_ok=True)

    summary = BatchSummary(out=str(out))
    counter = {"listed": 0, "listing_done": False}

    def pending() -> Iterator[Item]:
        for item in iter_inputs(inputs):
            if done and _norm(item.path) in done:
                summary.skipped += 1
                continue
            counter["listed"] += 1
            yield item
        counter["listing_done"] = True

    with open(out, "a" if not write_header else "w", newline="", encoding="utf-8") as f:
        writer = RowWriter(f, fmt, columns, write_header)

        def record(row: dict) -> None:
            writer.write(row)
            if row["error"]:
                summary.failed += 1
                log.debug("%s: %s", row["path"], row["error"])
            else:
                summary.ok += 1
                summary.audio_s += float(row["duration_s"])
            if progress is not None:
                progress.update(summary.ok + summary.failed, counter["listed"], summary.failed, counter["listing_done"])

        try:
            if jobs == 1:
                from runtime.model.model import Model

                model = Model.load(bundle.path, threads=threads)
                for item in pending():
                    record(predict_row(model, item, sha, unknown))
            else:
                rows = WorkerPool(jobs, (str(bundle.path), threads, unknown), file_timeout_s, lambda item, error:
                                  error_row(item.path, error, sha, bundle.labels), clock)
                for row in rows.run(pending()):
                    record(row)
        finally:
            if progress is not None:
                progress.update(summary.ok + summary.failed, counter["listed"], summary.failed, True, force=True)
                progress.close()
    summary.wall_s = clock() - start
    return summary
