"""`fieldear background record`: site audio saved as WAV segments, the same samples whatever the segment length."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from runtime.audio.files import read_audio
from runtime.audio.record import record_background
from runtime.audio.sources import FileSource
from runtime.cli.main import main

pytestmark = pytest.mark.runtime

DEMO = Path(__file__).resolve().parents[2] / "runtime" / "demo" / "demo.wav"


def _saved(files) -> np.ndarray:
    return np.concatenate([read_audio(f)[0] for f in files])


@pytest.mark.parametrize("segment_s", [7.0, 30.0])
def test_segments_hold_the_first_seconds_of_the_source_in_order(tmp_path, segment_s):
    done = record_background(FileSource(DEMO, chunk_seconds=0.37), tmp_path / "bg", 20.0, segment_s, stamp="t")
    x, rate = read_audio(DEMO)
    want = x[: 20 * rate]
    assert done.rate == rate and done.seconds == pytest.approx(20.0)
    assert len(done.files) == int(np.ceil(20.0 / segment_s))
    assert all(read_audio(f)[0].size == int(segment_s * rate) for f in done.files[:-1])
    assert np.abs(_saved(done.files) - want).max() <= 1.0 / 32767 + 1e-6  # 16-bit WAV
    assert not list((tmp_path / "bg").glob("*.tmp"))


def test_stop_ends_the_recording_keeping_what_was_saved(tmp_path):
    stop = threading.Event()
    source = FileSource(DEMO, chunk_seconds=1.0)
    blocks = source.blocks

    def stopping_blocks():
        for k, chunk in enumerate(blocks()):
            if k == 12:
                stop.set()
            yield chunk

    source.blocks = stopping_blocks
    done = record_background(source, tmp_path, 30.0, 5.0, stop=stop)
    assert 12.0 <= done.seconds <= 14.0 and len(done.files) == 3


def test_cli_records_a_file_and_a_missing_one_is_one_error_line(tmp_path, capsys):
    assert main(["background", "record", "--file", str(DEMO), "--out", str(tmp_path / "bg"), "--minutes", "0.25"]) == 0
    assert "saved 15.0 s at 16000 Hz in 1 file(s)" in capsys.readouterr().out
    assert main(["background", "record", "--file", str(tmp_path / "nope.wav"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "recording not found" in err and "Traceback" not in err
