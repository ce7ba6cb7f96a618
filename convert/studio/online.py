"""The studio's online test: one clip (uploaded, or recorded in the browser as WAV) scored by a project bundle with
the runtime's own predict code (``runtime.predict.predict.predict_file``), as ``fieldear predict`` scores it.

Clips are kept in the project's ``reports/online/`` (numbered, so a test can be looked at again).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from convert.studio.projects import REPORTS_DIR, Project
from runtime.audio.files import AUDIO_EXTENSIONS
from runtime.errors import FieldearError

log = logging.getLogger(__name__)

ONLINE_DIR = "online"
TOP_K = 5
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def online_dir(project: Project) -> Path:
    return project.path / REPORTS_DIR / ONLINE_DIR


def store_clip(project: Project, filename: str, stream, max_bytes: int) -> Path:
    """Save an uploaded clip as ``reports/online/<n>-<name>``; refused when it is not audio by suffix or too big."""
    suffix = Path(filename or "").suffix.lower()
    if suffix not in AUDIO_EXTENSIONS:
        raise FieldearError(f"{filename or '(no name)'!r} is not an audio file by its suffix",
                            f"upload one of: {', '.join(sorted(AUDIO_EXTENSIONS))}")
    folder = online_dir(project)
    folder.mkdir(parents=True, exist_ok=True)
    n = 1 + max((int(p.name.split("-", 1)[0]) for p in folder.iterdir() if p.name.split("-", 1)[0].isdigit()),
                default=0)
    name = f"{n}-{_SAFE.sub('_', Path(filename).stem)[:60] or 'clip'}{suffix}"
    path = folder / name
    size = 0
    with open(path, "wb") as f:
        while chunk := stream.read(1 << 16):
            size += len(chunk)
            if size > max_bytes:
                f.close()
                path.unlink()
                raise FieldearError(f"the clip is bigger than {max_bytes // (1024 * 1024)} MB", "test a shorter clip")
            f.write(chunk)
    return path


def online_clip(project: Project, name: str) -> Path:
    """A stored online-test clip by name (only names inside reports/online/)."""
    folder = online_dir(project).resolve()
    path = (folder / name).resolve()
    if "/" in name or not path.is_relative_to(folder) or not path.is_file():
        raise FieldearError(f"no online-test clip {name!r}")
    return path


def score_clip(bundle: Path, clip: Path, top_k: int = TOP_K) -> dict:
    """The bundle's prediction for the clip: top labels with scores, the label and whether it is unknown."""
    from runtime.model.model import Model
    from runtime.predict.predict import predict_file

    model = Model.load(bundle)
    pred = predict_file(model, clip)
    out = pred.to_dict(top_k, model_sha=model.bundle.sha256, unknown=True)
    out.update(file=clip.name, bundle=Path(bundle).name, best=pred.label)
    log.info("online test %s with %s: %s %.3f", clip.name, Path(bundle).name, pred.label, pred.score)
    return out
