"""Every command explains itself the same way (issue 11): a description, help and default for each option,
one placeholder style for values, and the README's command lines are all accepted by the CLI."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from runtime.cli.main import _subcommands, build_parser

ROOT = Path(__file__).resolve().parents[2]
# An option's value placeholder: upper-case words, optionally joined by = : , . or | (literal choices may be lower)
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*([=:,.][A-Z0-9_.]*)*(\|[A-Za-z0-9_=.]+)*|[a-z]+(\|[A-Za-z0-9_=.]+)+")


# README placeholders for numbers, given a number so that the option's type accepts them
NUMBER_PLACEHOLDERS = {"N": "2", "X": "0.5", "S": "1"}


def _options():
    parser = build_parser()
    for _, sub in [(None, parser), *_subcommands(parser)]:
        for action in sub._actions:
            if action.option_strings and action.dest not in ("help", "verbose", "quiet"):
                yield sub.prog, action


def test_every_subcommand_has_a_description():
    missing = [sub.prog for _, sub in _subcommands(build_parser()) if not sub.description]
    assert not missing


def test_every_option_has_help_a_placeholder_and_its_default():
    problems = []
    for prog, action in _options():
        name = f"{prog} {action.option_strings[-1]}"
        if not action.help or action.help is argparse.SUPPRESS:
            problems.append(f"{name}: no help")
            continue
        if action.nargs != 0 and action.choices is None and not PLACEHOLDER.fullmatch(str(action.metavar)):
            problems.append(f"{name}: placeholder {action.metavar!r}")
        shown = action.default not in (None, False, argparse.SUPPRESS, [], ())
        if action.nargs != 0 and shown and "default" not in action.help:
            problems.append(f"{name}: default {action.default!r} not said")
    assert not problems, "\n".join(problems)


def test_train_out_is_shown_as_required():
    usage = build_parser()._subparsers._group_actions[0].choices["train"].format_usage()
    assert re.search(r"\s--out DIR\s", usage) and "[--out" not in usage


def _readme_command_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("$ "):
                line = line[2:]
            if line.startswith("fieldear "):
                lines.append(line)
    return lines


def test_the_readme_has_command_lines():
    assert len(_readme_command_lines()) >= 15


@pytest.mark.parametrize("line", _readme_command_lines())
def test_every_readme_command_line_is_accepted(line, capsys):
    # optional parts are checked too: brackets dropped, the first of a|b|c alternatives taken
    words = [w.strip("[]").split("|")[0] for w in shlex.split(line)[1:] if w not in ("...", "…")]
    words = [NUMBER_PLACEHOLDERS.get(w, w) for w in words]
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(words + ["--help"])
    assert exc.value.code == 0, capsys.readouterr().err
