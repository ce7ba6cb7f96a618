"""Helpers for the field tests (no tests here): test bundles, a long-ish forest recording, a fake systemd.

The bundles are the ported aisfx backbone + a head whose bias makes label "a" win on any audio (so an
event is open whenever audio flows); two variants with different biases have different shas but the
same frontend, for reload tests. Building them needs TensorFlow (once per session).
"""

from __future__ import annotations

import os
import socket
import time
import wave
from pathlib import Path

import numpy as np

from tests.conftest import shared_path


def field_bundles(root: Path) -> dict[str, Path]:
    """{'A': bundle, 'B': bundle} under root (built once; reused when present)."""
    from runtime.model.bundle import load_bundle
    from tests.listen.support import make_bundle

    out = {}
    for name, bias in (("A", [5.0, 0.0]), ("B", [4.0, 0.0])):
        path = root / f"bundle{name}"
        try:
            load_bundle(path)
        except Exception:
            make_bundle(path, ["a", "b"], weights=np.zeros((512, 2)), bias=np.array(bias),
                        thresholds={"a": 0.5, "b": 0.5})
        out[name] = path
    return out


def forest_recording(out: Path, n_files: int = 4) -> Path:
    """The first n 10-s forest soundscapes joined into one 16-bit WAV (real field audio)."""
    from runtime.audio.files import read_audio

    if out.is_file():
        return out
    files = sorted(shared_path("soundscapes", "forest_24h").glob("*.wav"))[:n_files]
    x = np.concatenate([read_audio(f)[0] for f in files])
    tmp = out.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    os.replace(tmp, out)
    return out


class FakeSystemd:
    """Plays systemd's side of the notify protocol: a bound AF_UNIX datagram socket; records (t, fields)."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, dict]] = []
        self.t0 = time.monotonic()

    def env(self, watchdog_s: float | None = None) -> dict:
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_s is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog_s * 1e6))
        return env

    def poll(self, duration: float = 0.0) -> None:
        """Receive what arrives within ``duration`` seconds (at least one short wait)."""
        end = time.monotonic() + duration
        while True:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                if time.monotonic() >= end:
                    return
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic() - self.t0, fields))

    def wait_for(self, key: str, timeout: float, after: int = 0) -> float:
        """Seconds (since start) at which the first message with ``key`` (from index ``after``) arrived."""
        end = time.monotonic() + timeout
        while True:
            for t, fields in self.messages[after:]:
                if key in fields:
                    return t
            if time.monotonic() > end:
                raise AssertionError(f"no {key} within {timeout} s; got {self.messages}")
            self.poll(0.1)

    def times(self, key: str) -> list[float]:
        return [t for t, f in self.messages if key in f]

    def close(self) -> None:
        self.sock.close()
