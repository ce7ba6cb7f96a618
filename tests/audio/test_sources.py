"""Audio sources: bounded queue, file replay pacing, microphone via a fake sounddevice module."""

import subprocess
import sys
import time

import numpy as np
import pytest

from runtime.audio.sources import (
    ChunkQueue,
    FileSource,
    MicSource,
    SourceStats,
    choose_rate,
)
from runtime.errors import AudioError
from tests.listen.support import FakeSoundDevice

pytestmark = pytest.mark.runtime


@pytest.fixture
def forest(shared_data):
    return shared_data / "soundscapes" / "forest_24h" / "S4A03895_20190522_060000.wav"


def test_bounded_queue_counts_drops_and_stays_bounded():
    stats = SourceStats()
    q = ChunkQueue(8, stats)
    for i in range(1000):
        q.offer(np.full(1600, i, np.float32))
    assert q.qsize() == 8
    assert stats.dropped_blocks == 992
    assert q.get(timeout=0.01)[0] == 0  # the oldest kept, newest dropped (the callback never blocks)


def test_file_source_reads_whole_file_at_its_rate(forest):
    from runtime.audio.files import read_audio

    whole, rate = read_audio(forest)
    with FileSource(forest, chunk_seconds=0.37) as src:
        chunks = list(src.blocks())
    assert src.sample_rate == rate == 16000
    assert src.name == f"file:{forest.name}"
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    assert src.stats.samples == len(whole) and src.stats.dropped_blocks == 0


def test_file_source_realtime_pacing_uses_injected_clock(forest):
    now = [100.0]
    slept = []

    def sleep(dt):
        slept.append(dt)
        now[0] += dt

    with FileSource(forest, realtime=True, speed=2.0, chunk_seconds=1.0, clock=lambda: now[0], sleep=sleep) as src:
        n = sum(len(c) for c in src.blocks())
    assert n == 160000
    # 10 chunks of 1 s at 2x: the last one is due 4.5 s after the start
    assert now[0] - 100.0 == pytest.approx(4.5)
    assert len(slept) == 9


def test_file_replay_through_device_queue_drops_when_consumer_is_slow(forest):
    with FileSource(forest, chunk_seconds=0.1, device_queue=4) as src:
        got = 0
        for chunk in src.blocks():
            got += len(chunk)
            time.sleep(0.02)  # a slow consumer: the producer runs ahead and the queue overflows
    assert src.stats.dropped_blocks > 0
    assert got + src.stats.dropped_blocks * 1600 == 160000

    with FileSource(forest, realtime=True, speed=20.0, chunk_seconds=0.1, device_queue=50) as src:
        got = sum(len(c) for c in src.blocks())
    assert src.stats.dropped_blocks == 0 and got == 160000


def test_choose_rate_falls_back_to_what_the_device_accepts():
    assert choose_rate(FakeSoundDevice(rates=(16000, 48000)), None, 44100) == 48000
    assert choose_rate(FakeSoundDevice(rates=(44100,)), None, 16000) == 44100
    assert choose_rate(FakeSoundDevice(rates=(32000,), default_rate=32000), None, 16000) == 32000
    with pytest.raises(AudioError, match="accepts none of the rates"):
        choose_rate(FakeSoundDevice(rates=(11025,), default_rate=48000), None, 16000)
    with pytest.raises(AudioError, match="no usable input device") as exc:
        choose_rate(FakeSoundDevice(no_device=True), None, 16000)
    assert "fieldear devices" in exc.value.hint


def test_mic_source_copies_callback_audio_and_counts_overruns():
    sig = np.sin(np.arange(48000) / 10).astype(np.float32)
    sd = FakeSoundDevice(rates=(48000,), signal=sig, block_sleep=0.001, overflow_every=5)
    got = []
    with MicSource(model_rate=44100, sd=sd, chunk_seconds=0.1, poll_s=0.05) as mic:
        assert mic.sample_rate == 48000 and mic.name == "mic:default"
        for chunk in mic.blocks():
            got.append(chunk)
            if sum(map(len, got)) >= 48000 * 2:
                break
    audio = np.concatenate(got)
    np.testing.assert_array_equal(audio[:48000], sig)
    assert mic.stats.overruns > 0


def test_mic_unplugged_reconnects_with_backoff():
    sd = FakeSoundDevice(rates=(48000,), block_sleep=0.001, unplug_after=10)
    delays = []

    def sleep(dt):
        delays.append(dt)
        if len(delays) == 1:
            sd.fail_open = True  # first attempt fails: device still gone
        else:
            sd.fail_open = False

    chunks = 0
    with MicSource(sd=sd, chunk_seconds=0.01, poll_s=0.02, sleep=sleep, backoff=(1.0, 2.0, 5.0)) as mic:
        for chunk in mic.blocks():
            chunks += bool(len(chunk))
            if mic.stats.reconnects and chunks > 20:
                break
    assert delays[:2] == [1.0, 2.0]
    assert mic.stats.reconnects == 1
    assert len(sd.streams) == 2


def test_mic_gives_up_with_clear_error_after_max_reconnects():
    sd = FakeSoundDevice(rates=(48000,), block_sleep=0.001, unplug_after=3)

    def sleep(dt):
        sd.no_device = True

    with pytest.raises(AudioError, match="is gone"):
        with MicSource(sd=sd, chunk_seconds=0.01, poll_s=0.02, sleep=sleep, max_reconnects=2) as mic:
            for _ in mic.blocks():
                pass


def test_sounddevice_imported_only_for_the_microphone(forest):
    code = ("import sys; from runtime.audio.sources import FileSource\n"
            f"src = FileSource({str(forest)!r}); src.open(); sum(len(c) for c in src.blocks())\n"
            "import runtime.cli.listen, runtime.listen.loop, runtime.store.writer\n"
            "assert 'sounddevice' not in sys.modules, 'sounddevice imported'\n"
            "assert 'tensorflow' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_devices_command_lists_and_tests_with_fake_sounddevice(monkeypatch, capsys):
    from runtime.cli.main import main

    sig = (0.5 * np.sin(np.arange(48000) / 5)).astype(np.float32)
    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice(rates=(44100, 48000), signal=sig))
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "*   0  Fake USB Mic  (1 ch, default 48000 Hz; accepts 44100, 48000)" in out
    assert main(["devices", "--test", "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "recorded 1.0 s at 48000 Hz: level -9.0 dBFS RMS, peak -6.0 dBFS" in out


def test_devices_command_without_portaudio_device(monkeypatch, capsys):
    from runtime.cli.main import main

    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice(no_device=True))
    assert main(["devices"]) == 1
    assert "no audio input devices found" in capsys.readouterr().out
    assert main(["devices", "--test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no usable input device" in err[0]


def test_stop_event_ends_a_reconnect_backoff_at_once():
    import threading

    sd = FakeSoundDevice(rates=(48000,), block_sleep=0.001, unplug_after=3)
    stop = threading.Event()
    mic = MicSource(sd=sd, chunk_seconds=0.01, poll_s=0.02, backoff=(30.0,))
    t = None
    with mic:
        mic.set_stop(stop)
        for chunk in mic.blocks():
            if sd.unplug_after is None and t is None:  # unplugged: the next poll starts a 30 s backoff
                sd.no_device = True
                t = time.monotonic()
                threading.Timer(0.3, stop.set).start()
    assert t is not None and time.monotonic() - t < 3.0
    assert mic.stats.reconnects == 0
