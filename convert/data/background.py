"""``--background DIR``: recordings from the deployment site with none of the labels, any length.

Every audio file under the folders (hidden ones skipped) is cut into model blocks by the device frontend and
embedded by the training family's backbone (cached like training clips). Refused with one line: a folder that does not
exist, holds no audio, or only silence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.audio.files import AUDIO_EXTENSIONS
from runtime.errors import DatasetError
from runtime.model.bundle import sha256_file

log = logging.getLogger(__name__)

SILENT_DB = -90.0  # a block below this level (dB of mean mel power; digital silence is -120) holds nothing


@dataclass
class BackgroundFile:
    path: Path
    name: str  # shown in the report and in warnings
    sha: str
    emb: np.ndarray  # (n_blocks, dim)
    levels: np.ndarray  # (n_blocks,) dB


def audio_clips(paths) -> list:
    """Objects with ``path`` and ``sha`` (what the embedding functions take) for audio files."""
    from types import SimpleNamespace

    return [SimpleNamespace(path=Path(p), sha=sha256_file(p)) for p in paths]


def background_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--background {folder}: not a folder", "give a folder of recordings from the site")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise DatasetError(f"--background {folder}: no audio files in it",
                           f"supported: {', '.join(sorted(AUDIO_EXTENSIONS))}; record some with `fieldear background record`")
    return files


def load_background(folders, embed) -> list[BackgroundFile]:
    """Embeddings of every recording in ``folders`` (files of silence only are left out with a warning);
    ``embed(clips) -> (embeddings, levels)``: the family's own (``clip_embeddings``)."""
    out: list[BackgroundFile] = []
    for folder in folders:
        paths = background_files(folder)
        clips = audio_clips(paths)
        embs, levels = embed(clips)
        kept = 0
        for path, clip, emb, lv in zip(paths, clips, embs, levels):
            if not len(emb) or (lv < SILENT_DB).all():
                log.warning("--background: %s holds only silence (or is shorter than a block); left out", path)
                continue
            out.append(BackgroundFile(path=path, name=str(path.relative_to(folder)), sha=clip.sha, emb=emb, levels=lv))
            kept += 1
        if not kept:
            raise DatasetError(f"--background {folder}: every recording in it is silent or shorter than one block",
                               "record the site with `fieldear background record --minutes 10 --out DIR`")
    return out
