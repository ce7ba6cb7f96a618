"""Studio projects: one folder per project under a projects root, readable without the studio.

Layout of ``ROOT/<name>/``::

    audio/        imported files (copied; a name clash gets a numeric suffix)
    labels.csv    file,label — one row per imported clip; label empty while unlabelled
    bundles/      trained bundles (``fieldear train --out``)
    reports/      reports and logs of runs

``labels.csv`` is a manifest :func:`convert.data.dataset.load_dataset` reads (its ``file`` column is
accepted as ``path``), so :meth:`Project.write_train_manifest` only drops the unlabelled rows and the
rows labelled :data:`BACKGROUND_LABEL`, whose files go to train's ``--background`` folder instead.
Every imported file is checked as ``train`` checks it (:func:`convert.data.dataset.check_file`);
problems and duplicates (same decoded audio) are returned beside the file, nothing is dropped silently.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from convert.data.dataset import Problem, check_file
from runtime.audio.files import AUDIO_EXTENSIONS
from runtime.errors import DatasetError

log = logging.getLogger(__name__)

BACKGROUND_LABEL = "background"  # clips with this label feed train's --background (open set)
LABELS_CSV = "labels.csv"
AUDIO_DIR = "audio"
BUNDLES_DIR = "bundles"
REPORTS_DIR = "reports"
JOB_STATE_FILES = {"train": "train.json", "batch": "batch.json", "deploy": "deploy.json"}  # in reports/, one per kind
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
VERSION = re.compile(r"^v(\d+)$")  # the studio's train writes bundles/v1, v2, ...
_CHECKED: dict[tuple, tuple[float, str] | Problem] = {}  # (path, mtime_ns, size) -> check_file's answer
_CHECKED_LOCK = threading.Lock()
CHECK_CACHE_SIZE = 20000
_PROJECT_LOCKS: dict[str, threading.RLock] = {}  # one per project folder: labels.csv is read, changed, replaced


@dataclass(frozen=True)
class Imported:
    """The outcome for one offered file: where it went, or why it did not."""

    source: str
    stored: str | None  # file name under audio/ when imported
    problem: str | None = None  # Problem kind + message when the file is unusable
    duplicate_of: str | None = None  # stored file with the same decoded audio


def _check_key(path: Path) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def _remember(key: tuple, result: tuple[float, str] | Problem) -> None:
    with _CHECKED_LOCK:
        if len(_CHECKED) >= CHECK_CACHE_SIZE:
            _CHECKED.clear()
        _CHECKED[key] = result


def checked(path: Path) -> tuple[float, str] | Problem:
    """``check_file(path)``, remembered by (path, mtime, size): an import compares each new file with every
    stored one, which would otherwise decode the whole project again for every uploaded file."""
    try:
        key = _check_key(path)
    except OSError:
        return check_file(path)
    with _CHECKED_LOCK:
        if key in _CHECKED:
            return _CHECKED[key]
    result = check_file(path)
    _remember(key, result)
    return result


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name) or name.endswith("."):
        raise DatasetError(
            f"{name!r} is not a usable project name",
            "use 1-64 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit",
        )
    return name


class Projects:
    """The projects root folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / LABELS_CSV).is_file())

    def get(self, name: str) -> Project:
        path = self.root / check_name(name)
        if not (path / LABELS_CSV).is_file():
            raise DatasetError(f"no project {name!r} in {self.root}", "create it first")
        return Project(path)

    def create(self, name: str) -> Project:
        path = self.root / check_name(name)
        if path.exists():
            raise DatasetError(f"a project {name!r} already exists in {self.root}", "choose another name")
        for sub in (AUDIO_DIR, BUNDLES_DIR, REPORTS_DIR):
            (path / sub).mkdir(parents=True)
        project = Project(path)
        project.write_labels({})
        log.info("created project %s", path)
        return project

    def rename(self, name: str, new_name: str) -> Project:
        project = self.get(name)
        target = self.root / check_name(new_name)
        if target.exists():
            raise DatasetError(f"a project {new_name!r} already exists in {self.root}", "choose another name")
        project.path.rename(target)
        return Project(target)

    def delete(self, name: str, confirm: str) -> None:
        """Delete a project folder; ``confirm`` must repeat the name (the page's confirmation)."""
        project = self.get(name)
        if confirm != project.name:
            raise DatasetError(f"not deleting {name!r}: the confirmation does not match", "type the project's name")
        shutil.rmtree(project.path)
        log.info("deleted project %s", project.path)


def _project_lock(path: Path) -> threading.RLock:
    with _CHECKED_LOCK:
        return _PROJECT_LOCKS.setdefault(str(Path(path).resolve()), threading.RLock())


class Project:
    """One project folder. Changes to labels.csv (labels, imports) are serialized per folder within a process
    (the web server's threads), so two requests at once do not lose each other's rows."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = _project_lock(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def audio(self) -> Path:
        return self.path / AUDIO_DIR

    def versions(self) -> list[str]:
        """The trained bundles (folders of bundles/ with a model.json), newest first: by version number (v10 after
        v9), other names after them. The one order every page uses for "the newest bundle" (saving thresholds
        rewrites an older bundle's model.json, so its mtime says nothing)."""
        bundles = self.path / BUNDLES_DIR
        found = [d.name for d in bundles.iterdir() if (d / "model.json").is_file()] if bundles.is_dir() else []
        return sorted(found, key=lambda v: (int(m.group(1)) if (m := VERSION.match(v)) else -1, v), reverse=True)

    def newest_bundle(self) -> Path | None:
        """bundles/<the first of versions()>, or None before the first training."""
        versions = self.versions()
        return self.path / BUNDLES_DIR / versions[0] if versions else None

    def labels(self) -> dict[str, str]:
        """file name (under audio/) -> label ('' while unlabelled), in file order."""
        with open(self.path / LABELS_CSV, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return {Path(r["file"]).name: (r.get("label") or "").strip() for r in rows}

    def write_labels(self, labels: dict[str, str]) -> None:
        tmp = self.path / (LABELS_CSV + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(("file", "label"))
            writer.writerows((f"{AUDIO_DIR}/{name}", label) for name, label in labels.items())
        os.replace(tmp, self.path / LABELS_CSV)

    def set_label(self, files: list[str], label: str) -> None:
        """Label many clips at once ('' unlabels them)."""
        with self.lock:
            self._set_label(files, label)

    def _set_label(self, files: list[str], label: str) -> None:
        labels = self.labels()
        unknown = [f for f in files if f not in labels]
        if unknown:
            raise DatasetError(f"not in project {self.name!r}: {', '.join(unknown[:5])}")
        label = label.strip()
        if label and ("," in label or "/" in label):
            raise DatasetError(f"label {label!r} may not hold ',' or '/'")
        for f in files:
            labels[f] = label
        self.write_labels(labels)

    def counts(self) -> dict[str, int]:
        """Clips per label; '' counts the unlabelled ones."""
        counts: dict[str, int] = {}
        for label in self.labels().values():
            counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))

    def import_files(self, files: list[Path]) -> list[Imported]:
        """Check and copy files (or every file under a folder) into audio/; unusable files (hidden ones too)
        are reported, not copied; duplicates are copied and flagged."""
        with self.lock:
            return self._import_files(files)

    def _import_files(self, files: list[Path]) -> list[Imported]:
        offered: list[Path] = []
        for f in map(Path, files):
            if f.is_dir():
                offered += sorted(p for p in f.rglob("*") if p.is_file())
            else:
                offered.append(f)
        labels = self.labels()
        known = {}
        for name in labels:
            found = checked(self.audio / name)
            if not isinstance(found, Problem):
                known.setdefault(found[1], name)
        results = []
        for source in offered:
            if source.name.startswith("."):
                results.append(Imported(str(source), None, "hidden: the name starts with '.'"))
                continue
            if source.suffix.lower() not in AUDIO_EXTENSIONS:
                results.append(Imported(str(source), None, f"not_audio: suffix {source.suffix or '(none)'!r}"))
                continue
            found = check_file(source)
            if isinstance(found, Problem):
                results.append(Imported(str(source), None, f"{found.kind}: {found.message}"))
                continue
            stored = self._free_name(source.name, labels)
            shutil.copyfile(source, self.audio / stored)
            _remember(_check_key(self.audio / stored), found)
            labels[stored] = ""
            duplicate = known.get(found[1])
            known.setdefault(found[1], stored)
            results.append(Imported(str(source), stored, None, duplicate))
        self.write_labels(labels)
        log.info(
            "imported %d of %d file(s) into %s", sum(r.stored is not None for r in results), len(results), self.name
        )
        return results

    def _free_name(self, name: str, taken: dict[str, str]) -> str:
        stem, suffix = Path(name).stem, Path(name).suffix
        candidate, n = name, 1
        while candidate in taken or (self.audio / candidate).exists():
            candidate, n = f"{stem}-{n}{suffix}", n + 1
        return candidate

    def write_train_manifest(self) -> tuple[Path, Path | None]:
        """The manifest train reads (labelled, non-background rows) and the background folder (or None)."""
        labels = self.labels()
        train = {f: label for f, label in labels.items() if label and label != BACKGROUND_LABEL}
        if len(set(train.values())) < 2:
            raise DatasetError(
                f"project {self.name!r} has {len(set(train.values()))} label(s) to train on",
                f"label clips with at least two labels (besides {BACKGROUND_LABEL!r})",
            )
        manifest = self.path / REPORTS_DIR / "train.csv"
        with open(manifest, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(("path", "label"))
            writer.writerows((f"../{AUDIO_DIR}/{name}", label) for name, label in train.items())
        background = [f for f, label in labels.items() if label == BACKGROUND_LABEL]
        if not background:
            return manifest, None
        folder = self.path / REPORTS_DIR / "background"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for name in background:
            os.link(self.audio / name, folder / name)
        return manifest, folder
