"""The default model's training set (`make default-model`): ESC-10 + great-tit songs from ../shared/data."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


DEFAULT_ESC10_CLASSES = ("chainsaw", "clock_tick", "crackling_fire", "crying_baby", "dog", "helicopter", "rain",
                         "rooster", "sea_waves", "sneezing")

DEFAULT_BIRD_CLASSES = ("great_tit",)


def default_manifest(shared: str | Path, manifest: str | Path, n_folds: int = 5) -> Path:
    """The default training set as a CSV manifest: ESC-10 (official folds from the clip ids) +
    great-tit songs (labels = folder names; folds assigned round-robin over the sorted files)."""
    from convert.data.dataset import write_manifest
    from runtime.audio.files import AUDIO_EXTENSIONS
    from runtime.errors import DatasetError

    shared = Path(shared)
    rows = []
    missing = []
    for label in DEFAULT_ESC10_CLASSES:
        folder = shared / "esc10" / label
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in AUDIO_EXTENSIONS) if folder.is_dir() else []
        if not files:
            missing.append(str(folder))
        for p in files:
            clip_id = p.stem.split("_", 1)[-1]  # esc10_<fold>-<source>-<take>
            rows.append((p, label, clip_id.split("-", 1)[0], None))
    for label in DEFAULT_BIRD_CLASSES:
        folder = shared / "birdsong" / label
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in AUDIO_EXTENSIONS) if folder.is_dir() else []
        if not files:
            missing.append(str(folder))
        for k, p in enumerate(files):
            rows.append((p, label, str(k % n_folds + 1), None))
    if missing:
        raise DatasetError(f"the default training data is incomplete: no audio in {', '.join(missing)}",
                           "pass --shared pointing at the project's shared/data folder (esc10/, birdsong/)")
    return write_manifest(rows, manifest)
