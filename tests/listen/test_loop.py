"""The listening loop: streaming equals the predict path, hooks, CLI, signals, clips, model swap."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from runtime.audio.sources import FileSource
from runtime.detect.events import PostSettings
from runtime.listen.hooks import Hook
from runtime.listen.loop import Listener
from runtime.store.writer import Store
from tests.listen.support import ROOT, make_bundle

pytestmark = pytest.mark.train  # the test bundle's head is made with TensorFlow

LABELS = ["a", "b", "c"]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    pytest.importorskip("tensorflow")
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", LABELS, seed=1)


@pytest.fixture(scope="session")
def model(bundle):
    from runtime.model.model import Model

    return Model.load(bundle, threads=1)


@pytest.fixture
def dog(esc10):
    return esc10 / "dog" / "esc10_1-100032-A.wav"


class Recorder(Hook):
    def __init__(self):
        self.calls = {}
        self.blocks = []
        self.events = []

    def _n(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def on_start(self, listener):
        self._n("on_start")

    def on_audio(self, listener, n):
        self._n("on_audio")

    def on_block(self, listener, block, scores):
        self._n("on_block")
        self.blocks.append((block.start_s, block.end_s, scores.copy()))

    def on_event(self, listener, row):
        self._n("on_event")
        self.events.append(row)

    def on_tick(self, listener, now):
        self._n("on_tick")

    def on_stop(self, listener):
        self._n("on_stop")


def listen_file(model, path, db, chunk_seconds=0.5, hooks=(), block_hop=None, settings=None, **kw):
    src = FileSource(path, chunk_seconds=chunk_seconds)
    store = Store(db, device_id="test", source=src.name, model_sha=model.bundle.sha256, settings={})
    listener = Listener(model, src, store, settings or PostSettings(), hooks=list(hooks), block_hop=block_hop,
                        clock=lambda: 1_780_000_000.0, **kw)
    summary = listener.run()
    store.close()
    return summary, listener


@pytest.mark.parametrize("block_hop", [None, 25])
def test_streaming_any_chunk_size_gives_predict_block_scores(model, dog, tmp_path, block_hop):
    from runtime.audio.files import read_audio
    from runtime.features.pipeline import blocks_of, stack

    x, rate = read_audio(dog)
    params = model.params if block_hop is None else model.params.with_block_hop(block_hop)
    blocks = blocks_of(x, rate, params)
    expected = model.score_blocks(stack(blocks, params))
    assert len(blocks) >= 3
    for chunk_seconds in (0.05, 0.37, 1.0, 7.0):
        rec = Recorder()
        listen_file(model, dog, tmp_path / f"{chunk_seconds}.db", chunk_seconds, [rec], block_hop=block_hop)
        got = np.stack([s for _, _, s in rec.blocks])
        np.testing.assert_array_equal(got, expected)
        assert [b[0] for b in rec.blocks] == [b.start_s for b in blocks]


def test_hooks_are_called_and_a_failing_hook_does_not_stop_listening(model, shared_data, tmp_path):
    class Broken(Hook):
        def on_block(self, listener, block, scores):
            raise RuntimeError("boom")

    forest = shared_data / "soundscapes" / "forest_24h" / "S4A03895_20190522_120000.wav"
    rec = Recorder()
    summary, listener = listen_file(model, forest, tmp_path / "h.db", 0.5, [Broken(), rec], tick_s=0.0)
    assert rec.calls["on_start"] == rec.calls["on_stop"] == 1
    assert rec.calls["on_block"] == summary["blocks"] == 7
    assert rec.calls["on_audio"] == 20 and rec.calls["on_tick"] >= 1
    assert summary["hook_errors"] == 7
    assert rec.calls.get("on_event", 0) == summary["events"] >= 1
    assert all("id" in row and row["source"] == f"file:{forest.name}" for row in rec.events)
    conn = sqlite3.connect(tmp_path / "h.db")
    assert conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0] == 7
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == summary["events"]


def test_cli_listen_file_summary_events_export(bundle, dog, tmp_path, capsys):
    from runtime.cli.main import main

    db = tmp_path / "cli.db"
    rc = main(["listen", "--model", str(bundle), "--file", str(dog), "--db", str(db), "--device-id", "dev-7",
               "--window-every", "2", "--smoothing", "2", "--summary"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"file:{dog.name}: 5.0 s of audio" in out and "start       end" in out
    conn = sqlite3.connect(db)
    n_events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    n_windows = conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
    settings = json.loads(conn.execute("SELECT settings_json FROM events").fetchone()[0])
    assert n_events >= 1 and n_windows == 2  # 3 blocks, every 2nd logged
    assert settings["smoothing"] == 2 and settings["thresholds"] == {l: 0.5 for l in LABELS}

    assert main(["events", "--db", str(db)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["id", "start", "(UTC)"] and len(table) == n_events + 1
    assert all(line.endswith(f"file:{dog.name}") for line in table[1:])
    out_csv = tmp_path / "ev.csv"
    assert main(["export", "--db", str(db), "--what", "events", "--format", "csv", "--out", str(out_csv)]) == 0
    header = out_csv.read_text().splitlines()[0].split(",")
    assert {"label", "start_s", "end_s", "start_utc", "device_id"} <= set(header)
    assert len(out_csv.read_text().splitlines()) == n_events + 1
    assert main(["export", "--db", str(db), "--what", "windows", "--format", "jsonl"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["device_id"] == "dev-7"


def test_cli_errors_are_one_line(bundle, tmp_path, capsys):
    from runtime.cli.main import main

    assert main(["listen", "--model", str(bundle), "--file", str(tmp_path / "nope.wav"), "--db", str(tmp_path / "x.db")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recording not found" in err[0]
    assert main(["events", "--db", str(tmp_path / "missing.db")]) == 2
    assert "no log database" in capsys.readouterr().err
    assert main(["listen", "--model", str(bundle), "--file", "x.wav", "--threshold", "zebra=0.5", "--db", str(tmp_path / "x.db")]) == 2
    assert "zebra" in capsys.readouterr().err


MIC_SCRIPT = """
import sys, numpy as np
from tests.listen.support import FakeSoundDevice
sig = np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32)
sys.modules["sounddevice"] = FakeSoundDevice(rates=(48000,), signal=sig, block_sleep=0.1)
from runtime.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_on_microphone_closes_open_events_and_exits_0(bundle, tmp_path):
    db = tmp_path / "mic.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", MIC_SCRIPT, "listen", "--model", str(bundle), "--db", str(db),
                             "--device-id", "mic-test", "--json"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    n = 0
    while time.time() < deadline and n < 3:  # wait until blocks are being logged
        time.sleep(0.5)
        if db.exists():
            try:
                n = sqlite3.connect(db).execute("SELECT COUNT(*) FROM windows").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    assert n >= 3, proc.stderr.read() if proc.poll() is not None else "no windows logged"
    t = time.time()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert time.time() - t < 5
    summary = json.loads(out)
    assert summary["stopped"] is True and summary["source"] == "mic:default"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    events = conn.execute("SELECT label, start_s, end_s FROM events").fetchall()
    assert len(events) == summary["events"] >= 1  # the event open at SIGTERM was closed and logged
    assert max(e[2] for e in events) >= summary["audio_s"] - 3


def test_clips_written_within_quota(model, esc10, tmp_path):
    import wave

    from runtime.listen.clips import ClipRecorder

    path = esc10 / "rooster" / sorted(os.listdir(esc10 / "rooster"))[0]
    clips = ClipRecorder(tmp_path / "clips", pre_s=0.5, post_s=0.5, quota_mb=1.0)
    summary, _ = listen_file(model, path, tmp_path / "c.db", 0.25, clips=clips,
                             settings=PostSettings(default_threshold=0.05, hysteresis=0.0))
    conn = sqlite3.connect(tmp_path / "c.db")
    rows = conn.execute("SELECT e.start_s, e.end_s, e.clip_path, c.start_s FROM events e "
                        "LEFT JOIN clips c ON c.event_id = e.id").fetchall()
    assert rows and all(r[2] for r in rows)
    for start, end, rel, clip_start in rows:
        with wave.open(str(tmp_path / rel)) as w:
            got = w.getnframes() / w.getframerate()
        expected = min(end + 0.5, 5.0) - max(start - 0.5, 0.0)
        assert got == pytest.approx(expected, abs=0.01)
        assert clip_start == pytest.approx(max(start - 0.5, 0.0), abs=0.01)  # where the clip starts, stored
    # quota: a tiny quota keeps only the newest clips
    small = ClipRecorder(tmp_path / "small", pre_s=0.5, post_s=0.5, quota_mb=0.2)
    listen_file(model, path, tmp_path / "d.db", 0.25, clips=small,
                settings=PostSettings(default_threshold=0.05, hysteresis=0.0))
    total = sum(p.stat().st_size for p in (tmp_path / "small").glob("*.wav"))
    assert total <= 0.2e6


def test_model_swap_between_chunks_keeps_audio(model, bundle, shared_data, tmp_path):
    from runtime.model.model import Model

    forest = shared_data / "soundscapes" / "forest_24h" / "S4A03895_20190522_000000.wav"
    other = Model.load(bundle, threads=1)

    class SwapOnce(Hook):
        done = False

        def on_block(self, listener, block, scores):
            if not self.done:
                self.done = True
                listener.swap_model(other)

    summary, listener = listen_file(model, forest, tmp_path / "s.db", 0.5, [SwapOnce()])
    assert listener.stats.model_swaps == 1 and listener.model is other
    assert summary["blocks"] == 7 and summary["audio_s"] == 10.0


def test_swapped_model_brings_its_detection_settings(model, bundle, shared_data, tmp_path):
    """A bundle swapped in on SIGHUP (train --update) carries new stream defaults: the detector switches to them."""
    from runtime.model.model import Model

    forest = shared_data / "soundscapes" / "forest_24h" / "S4A03895_20190522_000000.wav"
    other = Model.load(bundle, threads=1)
    new = PostSettings(default_threshold=0.9, smoothing=2, merge_gap_s=1.0)

    class SwapOnce(Hook):
        done = False

        def on_block(self, listener, block, scores):
            if not self.done:
                self.done = True
                listener.swap_model(other, new)

    summary, listener = listen_file(model, forest, tmp_path / "s.db", 0.5, [SwapOnce()])
    assert listener.stats.model_swaps == 1 and listener.model is other
    assert listener.settings == new.resolved(other.labels)
    assert listener.detector.settings.smoothing == 2 and listener.detector.on.tolist() == [0.9] * len(other.labels)
    assert summary["blocks"] == 7 and summary["audio_s"] == 10.0  # no audio lost


def test_clipping_and_digital_silence_are_reported_not_fatal(model, tmp_path, caplog):
    from runtime.audio.wav import write_wav

    rate = 16000
    x = np.zeros(rate * 70, np.float32)  # 70 s of digital silence ...
    x[-rate * 5:] = np.sign(np.sin(np.arange(rate * 5) * 0.05)).astype(np.float32)  # ... then 5 s clipped square
    wav = tmp_path / "faults.wav"
    write_wav(wav, x, rate)
    summary, listener = listen_file(model, wav, tmp_path / "f.db", 1.0)
    assert summary["audio_s"] == 70.0 and summary["blocks"] == 59
    assert summary["clipped_samples"] > rate * 4
    text = caplog.text
    assert "digitally silent for 60 s" in text and "input is clipping" in text


def test_source_failing_for_good_still_closes_and_logs_open_events(model, shared_data, tmp_path):
    from runtime.errors import AudioError

    class DiesAfter(FileSource):
        def blocks(self):
            for i, chunk in enumerate(super().blocks()):
                if i == 12:
                    raise AudioError("input device mic:x is gone and did not come back")
                yield chunk

    forest = shared_data / "soundscapes" / "forest_24h" / "S4A03895_20190522_000000.wav"
    src = DiesAfter(forest, chunk_seconds=0.5)
    store = Store(tmp_path / "die.db", device_id="t", source=src.name, model_sha="m", settings={})
    rec = Recorder()
    listener = Listener(model, src, store, PostSettings(), hooks=[rec])
    with pytest.raises(AudioError, match="is gone"):
        listener.run()
    store.close()
    assert rec.calls["on_stop"] == 1 and listener.stats.audio_s == 6.0
    rows = sqlite3.connect(tmp_path / "die.db").execute("SELECT label, end_s FROM events").fetchall()
    assert rows and max(r[1] for r in rows) > 4.0  # the event open when the device died was logged


def test_clips_clean_half_written_files_and_stop_below_the_free_space_floor(model, esc10, tmp_path):
    from runtime.listen.clips import ClipRecorder

    path = esc10 / "rooster" / sorted(os.listdir(esc10 / "rooster"))[0]
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "20260501T041207_00000007_dog.tmp").write_bytes(b"RIFF half a clip")
    space = {"free_mb": 1000.0}
    clips = ClipRecorder(tmp_path / "clips", pre_s=0.5, post_s=0.5, min_free_mb=200.0,
                         free_space=lambda directory: space["free_mb"])
    settings = PostSettings(default_threshold=0.05, hysteresis=0.0)
    summary, _ = listen_file(model, path, tmp_path / "c.db", 0.25, clips=clips, settings=settings)
    assert not list((tmp_path / "clips").glob("*.tmp")) and clips.written >= 1
    assert summary["clips_skipped_low_space"] == 0
    space["free_mb"] = 200.05  # a clip of 0.1 MB would leave less than the floor
    low = ClipRecorder(tmp_path / "low", pre_s=0.5, post_s=0.5, min_free_mb=200.0,
                       free_space=lambda directory: space["free_mb"])
    summary, _ = listen_file(model, path, tmp_path / "d.db", 0.25, clips=low, settings=settings)
    assert low.written == 0 and not list((tmp_path / "low").glob("*.wav"))
    assert summary["clips_skipped_low_space"] == summary["events"] > 0
