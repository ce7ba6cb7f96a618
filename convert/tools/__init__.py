"""Offline tools run by make targets (not part of the product CLI)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable


def run_tool(body: Callable[[], None], shared: Path) -> int:
    """A tool's main: INFO logging, the shared data folder checked, a FieldearError as one line and its exit code."""
    from runtime.errors import DatasetError, FieldearError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if not shared.is_dir():
            raise DatasetError(f"shared data not found: {shared}", "pass --shared PATH to ../shared/data")
        body()
        return 0
    except FieldearError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
