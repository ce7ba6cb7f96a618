"""The spectrogram helper process: ``python -m runtime.web.render_worker [MODEL_DIR]``.

numpy + scipy.fft (the frontend) cost about 30 MB of RSS; keeping them out of the web server keeps it small
while idle. The server starts this helper on the first image request (``WorkerClient``), sends it clip paths
(already confined to the clips directory) one line each, and reads back ``OK``/``ER`` + a 4-byte length + the PNG
(or an error message). The helper exits after ``IDLE_EXIT_S`` without requests, or when the server goes away.
"""

from __future__ import annotations

import logging
import os
import select
import struct
import subprocess
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

IDLE_EXIT_S = 60.0


def _reply(out, kind: bytes, data: bytes) -> None:
    out.write(kind + struct.pack(">I", len(data)) + data)
    out.flush()


def worker_main(model: Path | None, idle_exit_s: float = IDLE_EXIT_S) -> int:
    from runtime.web.media import read_clip
    from runtime.web.spectrogram import frontend_params, render

    params = frontend_params(model)
    stdin, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        ready, _, _ = select.select([stdin], [], [], idle_exit_s)
        if not ready:
            return 0  # idle: the server starts a new helper when it needs one
        line = stdin.readline()
        if not line:
            return 0  # the server closed the pipe
        try:
            samples, rate = read_clip(Path(line.decode("utf-8").rstrip("\n")))
            _reply(out, b"OK", render(samples, rate, params))
        except Exception as exc:  # one bad clip must not end the helper
            _reply(out, b"ER", f"{type(exc).__name__}: {exc}".encode("utf-8", "replace"))


class WorkerClient:
    """The server's end: one helper at a time, requests serialized, restarted when it has exited."""

    def __init__(self, model: Path | None, idle_exit_s: float = IDLE_EXIT_S):
        self.model = model
        self.idle_exit_s = idle_exit_s
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        argv = [sys.executable, "-m", "runtime.web.render_worker", "--idle-exit-s", str(self.idle_exit_s)]
        if self.model is not None:
            argv.append(str(self.model))
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log.debug("starting the spectrogram helper: %s", argv)
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _ask(self, path: Path) -> tuple[bytes, bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()
        self._proc.stdin.write(str(path).encode("utf-8") + b"\n")
        self._proc.stdin.flush()
        head = self._proc.stdout.read(6)
        if len(head) != 6:
            raise BrokenPipeError("the spectrogram helper exited")
        kind, n = head[:2], struct.unpack(">I", head[2:])[0]
        return kind, self._proc.stdout.read(n)

    def png(self, path: Path) -> bytes:
        if "\n" in str(path):
            raise ValueError("newline in a clip path")
        with self._lock:
            try:
                kind, data = self._ask(path)
            except (BrokenPipeError, OSError):  # it exited (idle) between the check and the write: once more
                self._proc = None
                kind, data = self._ask(path)
        if kind != b"OK":
            raise ValueError(data.decode("utf-8", "replace"))
        return data

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.stdin.close()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
            self._proc = None


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="fieldear serve's spectrogram helper (started by the server)")
    ap.add_argument("model", nargs="?", type=Path, default=None)
    ap.add_argument("--idle-exit-s", type=float, default=IDLE_EXIT_S)
    args = ap.parse_args()
    try:
        os.nice(5)
    except OSError:
        pass
    sys.exit(worker_main(args.model, args.idle_exit_s))
