"""Commands as a new user meets them (issue 11): the example config checks on a fresh clone, `evaluate --db`
picks a run and says when the annotations seem to be about another recording."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runtime.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "runtime" / "demo"


def test_example_config_checks_without_its_model(capsys):
    """The example names /var/lib/fieldear/models/current, absent on a laptop: a warning, not an error."""
    assert main(["config", "check", str(ROOT / "firmware_tools" / "fieldear.example.toml")]) == 0
    captured = capsys.readouterr()
    assert ": OK" in captured.out and "not found" in captured.out


def test_listen_still_refuses_a_missing_model(tmp_path, capsys):
    assert main(["listen", "--file", str(DEMO / "demo.wav"), "--model", str(tmp_path / "none"),
                 "--db", str(tmp_path / "x.db")]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_evaluate_db_takes_a_run_and_warns_about_another_recording(tmp_path, capsys, caplog):
    db = tmp_path / "log.db"
    short = tmp_path / "demo_start.wav"
    for source in (DEMO / "demo.wav", DEMO / "demo.wav"):
        assert main(["listen", "--file", str(source), "--db", str(db), "--device-id", "t"]) == 0
    truth = DEMO / "demo_truth.csv"
    assert main(["evaluate", "--db", str(db), "--annotations", str(truth), "--run", "1", "--out", str(tmp_path)]) == 0
    first = json.loads((tmp_path / "report.json").read_text())
    assert first["run"]["key"] == "run:000001" and "right pair" not in caplog.text
    assert main(["evaluate", "--db", str(db), "--annotations", str(truth), "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["run"]["key"] == "run:000002"
    assert main(["evaluate", "--db", str(db), "--annotations", str(truth), "--run", "7"]) == 2
    assert "no run 7" in capsys.readouterr().err

    shutil.copy(DEMO / "demo.wav", short)
    assert main(["listen", "--file", str(short), "--db", str(db), "--device-id", "t"]) == 0
    other = tmp_path / "forest_truth.csv"
    shutil.copy(truth, other)
    assert main(["evaluate", "--db", str(db), "--annotations", str(other)]) == 0
    assert "demo_start.wav" in caplog.text and "right pair" in caplog.text
