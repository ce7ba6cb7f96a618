"""The one way firmware_tools runs a system command: captured output, a timeout, and a one-line error."""

from __future__ import annotations

import subprocess
from typing import Callable

from runtime.errors import FieldearError


class CommandFailed(FieldearError):
    """A command exited non-zero or timed out (its last line of output is in the message)."""


def run_command(argv: list[str], what: str | None = None, *, check: bool = True, timeout: float = 300,
                hint: str | None = None, missing_hint: str | None = None, run: Callable = subprocess.run) -> subprocess.CompletedProcess:
    """Run ``argv``; with ``check``, a non-zero exit raises ``CommandFailed`` naming ``what`` (default: the command).

    ``hint`` goes with a failure, ``missing_hint`` with a command that is not installed."""
    what = what or f"`{' '.join(argv)}`"
    try:
        proc = run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise FieldearError(f"{what}: command not found: {argv[0]}", missing_hint) from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{what}: timed out after {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise CommandFailed(f"{what} failed (exit {proc.returncode})" + (f": {detail[-1]}" if detail else ""), hint)
    return proc
