"""What a bundle's model.json says of its parts' licences, read without loading the bundle (no numpy: `fieldear
serve` checks it before it starts, and the web server's memory budget has no room for the model's imports)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from runtime.paths import DEFAULT_BUNDLE

MODEL_JSON = "model.json"  # a bundle's self-description (runtime.model.bundle)


def licence_notice(meta: dict) -> str | None:
    """The plain statement a bundle with a non-commercial part (model.json "licences") must come with, else None."""
    parts = [p for p in meta.get("licences") or [] if isinstance(p, dict) and p.get("non_commercial")]
    if not parts:
        return None
    what = "; ".join(f"{p.get('part', '?')} under {p.get('licence', '?')}" for p in parts)
    return f"this model is for NON-COMMERCIAL use only: it contains {what} (see model.json 'licences')"


def read_licence_notice(path: str | os.PathLike | None) -> str | None:
    """``licence_notice`` of the bundle at ``path`` (None: the default bundle), reading model.json only."""
    mj = (Path(path) if path is not None else DEFAULT_BUNDLE) / MODEL_JSON
    try:
        return licence_notice(json.loads(mj.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None  # the bundle's own loading reports what is wrong with it
