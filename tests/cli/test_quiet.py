"""The CLI's consistency rules (issue 11): -q/-v anywhere, a mistyped option told by its subcommand, exit codes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from runtime.cli.main import build_parser, main, setup_logging
from tests.conftest import shared_path


@pytest.mark.parametrize("argv", [["-q", "predict", "f.wav"], ["predict", "f.wav", "-q"], ["predict", "-q", "f.wav"]])
def test_quiet_before_or_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert args.quiet is True and args.verbose == 0 and args.files == ["f.wav"]


def test_verbose_after_a_nested_subcommand():
    args = build_parser().parse_args(["config", "check", "x.toml", "-vv"])
    assert args.verbose == 2 and args.quiet is False


def test_mistyped_option_shows_the_subcommand_usage_and_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "f.wav", "--topk", "3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fieldear predict" in err and "did you mean --top-k?" in err


def test_quiet_logs_only_errors():
    setup_logging(0, quiet=True)
    try:
        assert not logging.getLogger("runtime.anything").isEnabledFor(logging.WARNING)
        assert not logging.getLogger("tensorflow").isEnabledFor(logging.WARNING)
        assert logging.getLogger("runtime.anything").isEnabledFor(logging.ERROR)
    finally:
        setup_logging(0, quiet=False)


def test_batch_on_a_missing_folder_is_one_error_line(tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    assert main(["batch", str(missing), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0]
    assert not (tmp_path / "p.csv").exists()


def test_exit_codes_are_in_the_top_level_help():
    text = build_parser().format_help()
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"  {code}" in text


def test_evaluate_with_no_truth_label_of_the_model_is_an_error(tmp_path, capsys):
    preds = tmp_path / "preds.csv"
    preds.write_text("path,label,score,error,score_dog,score_rooster\n"
                     "a/zebra_1.wav,dog,0.9,,0.9,0.1\na/zebra_2.wav,rooster,0.8,,0.2,0.8\n", encoding="utf-8")
    assert main(["evaluate", str(preds)]) == 2
    err = capsys.readouterr().err
    assert "no truth label is a label of the model" in err and "zebra" in err
    assert main(["evaluate", str(preds), "--truth", "folder"]) == 2  # folder "a": not a model label either


def test_no_interpreter_banner_on_stderr():
    """The TFLite runtime's `INFO: Created TensorFlow Lite XNNPACK delegate` line is filtered at its source."""
    clip = shared_path("esc10", "dog", "esc10_1-100032-A.wav")
    done = subprocess.run([sys.executable, "-m", "runtime.cli", "predict", str(clip)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "FIELDEAR_TFLITE_XNNPACK": "1"})
    assert done.returncode == 0, done.stderr
    assert "dog" in done.stdout
    assert "XNNPACK" not in done.stderr and "INFO:" not in done.stderr, done.stderr
