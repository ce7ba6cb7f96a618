"""The listening path with the committed default model (no TensorFlow: runs under tflite-runtime too)."""

import json

import numpy as np
import pytest

from runtime.paths import DEFAULT_BUNDLE, DEMO_DIR
from tests.listen.test_loop import Recorder, listen_file

pytestmark = [pytest.mark.runtime,
              pytest.mark.skipif(not (DEFAULT_BUNDLE / "model.json").is_file(), reason="no default model bundle")]

DEMO = DEMO_DIR


@pytest.fixture(scope="module")
def model():
    from runtime.model.model import Model

    return Model.load(None, threads=1)


def test_stream_block_scores_equal_predict_path_default_model(model, esc10, tmp_path):
    from runtime.audio.files import read_audio
    from runtime.features.pipeline import blocks_of, stack

    path = esc10 / "rooster" / "esc10_1-100038-A.wav"
    if not path.exists():
        path = sorted((esc10 / "rooster").glob("*.wav"))[0]
    x, rate = read_audio(path)
    expected = model.score_blocks(stack(blocks_of(x, rate, model.params), model.params))
    for chunk_seconds in (0.02, 0.5, 3.3):
        rec = Recorder()
        listen_file(model, path, tmp_path / f"{chunk_seconds}.db", chunk_seconds, [rec])
        np.testing.assert_array_equal(np.stack([s for _, _, s in rec.blocks]), expected)


def test_demo_recording_is_heard(tmp_path, capsys):
    from runtime.cli.main import main
    from runtime.evaluate import stream_eval

    db = tmp_path / "demo.db"
    assert main(["listen", "--file", str(DEMO / "demo.wav"), "--db", str(db), "--device-id", "demo", "--summary"]) == 0
    out = capsys.readouterr().out
    assert "file:demo.wav: 36.0 s of audio" in out
    assert main(["evaluate", "--db", str(db), "--annotations", str(DEMO / "demo_truth.csv"), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "report.json").read_text())
    assert result == stream_eval.evaluate_run(db, DEMO / "demo_truth.csv")
    # every mixed-in sound is a label of the default model and at least 4 of the 5 are found (overlap criterion)
    assert all(v["in_model"] for v in result["per_label"].values() if v["n_true"])
    assert result["micro"]["event_overlap"]["tp"] >= 4


def test_listen_on_a_full_disk_reports_its_lost_rows_and_exits_1(tmp_path, capsys, monkeypatch):
    import sqlite3

    from runtime.cli.main import main
    from runtime.store import writer

    connect = writer.connect

    def full_after_schema(path, **kw):  # the disk fills up just after the database is opened
        conn = connect(path, **kw)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        return conn

    monkeypatch.setattr(writer, "connect", full_after_schema)
    db = tmp_path / "full.db"
    assert main(["listen", "--file", str(DEMO / "demo.wav"), "--db", str(db), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    conn = sqlite3.connect(db)
    try:
        logged = conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
    finally:
        conn.close()
    assert logged < summary["blocks"] and summary["dropped_rows"] >= summary["blocks"] - logged > 0


def non_commercial_copy(tmp_path):
    """A copy of the default bundle whose model.json declares a part under a non-commercial licence (as a BirdNET
    bundle's does), its checksum renewed so the runtime's checks pass."""
    import shutil

    from runtime.model.bundle import MODEL_JSON, canonical_sha

    out = tmp_path / "nc-bundle"
    shutil.copytree(DEFAULT_BUNDLE, out)
    meta = json.loads((out / MODEL_JSON).read_text())
    meta["licences"] = [{"part": "the BirdNET v2.4 backbone", "licence": "CC BY-NC-SA 4.0", "non_commercial": True}]
    meta["json_sha256"] = canonical_sha(meta)
    (out / MODEL_JSON).write_text(json.dumps(meta, indent=2))
    return out


def test_listen_and_batch_print_the_non_commercial_notice_as_predict_does(tmp_path, capsys, esc10):
    from runtime.cli.main import main
    from runtime.model.licences import read_licence_notice

    clip = sorted((esc10 / "dog").glob("*.wav"))[0]
    assert main(["listen", "--file", str(clip), "--db", str(tmp_path / "default.db")]) == 0
    assert "NON-COMMERCIAL" not in capsys.readouterr().err  # the default bundle has no such part
    bundle = non_commercial_copy(tmp_path)
    notice = read_licence_notice(bundle)
    assert notice and "CC BY-NC-SA 4.0" in notice
    assert main(["listen", "--file", str(clip), "--db", str(tmp_path / "nc.db"), "--model", str(bundle)]) == 0
    assert f"fieldear listen: {notice}\n" in capsys.readouterr().err
    assert main(["predict", "--model", str(bundle), str(clip)]) == 0
    assert f"fieldear predict: {notice}\n" in capsys.readouterr().err  # the same line
    assert main(["batch", "--model", str(bundle), "--out", str(tmp_path / "batch.csv"), str(clip)]) == 0
    assert f"fieldear batch: {notice}\n" in capsys.readouterr().err
