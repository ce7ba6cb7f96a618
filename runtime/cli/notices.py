"""What the commands tell the user about a bundle before they use it."""

from __future__ import annotations

import sys


def print_licence_notice(command: str, notice: str | None) -> None:
    """The command's one line on stderr for a bundle with a non-commercial part
    (runtime.model.bundle.licence_notice); nothing for a free bundle."""
    if notice:
        print(f"fieldear {command}: {notice}", file=sys.stderr, flush=True)
