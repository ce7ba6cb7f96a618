"""Fixtures for the studio's tests: a Flask test client over a projects root (no device log), a small real project
(ESC-10 dog and rooster clips, imported and labelled), its embedding cache and a bundle trained from it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from convert.studio.projects import Projects
from tests.web.conftest import csrf, demo_log, log_copy  # noqa: F401  (csrf re-exported; the device log fixtures)


def make_studio_app(root: Path, db: Path | None = None, **settings):
    pytest.importorskip("flask")
    from runtime.web.app import create_app
    from runtime.web.settings import WebSettings

    return create_app(WebSettings(db=db, projects=root, **settings), status_state=None)


@pytest.fixture
def studio_client(tmp_path):
    app = make_studio_app(tmp_path / "projects")
    app.testing = True
    return app.test_client()


def labels_csv(project: Path) -> dict[str, str]:
    """labels.csv of a project folder as {file name under audio/: label}, in file order."""
    with open(project / "labels.csv", newline="", encoding="utf-8") as f:
        return {Path(row["file"]).name: row["label"] for row in csv.DictReader(f)}


def labelled_project(esc10: Path, root: Path, classes=("dog", "rooster"), per_class: int = 6):
    """A project under ``root`` with ``per_class`` clips of each class imported and labelled."""
    project = Projects(root).create("small")
    for label in classes:
        results = project.import_files(sorted((esc10 / label).glob("*.wav"))[:per_class])
        project.set_label([r.stored for r in results], label)
    return project


@pytest.fixture
def project(esc10, tmp_path):
    return labelled_project(esc10, tmp_path / "projects")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def trained_project(esc10, tmp_path_factory, cache):
    """A small project and its bundle bundles/v1, made by `fieldear train` on the project's manifest."""
    from runtime.cli.main import main

    project = labelled_project(esc10, tmp_path_factory.mktemp("projects"))
    manifest, _ = project.write_train_manifest()
    assert main(["train", str(manifest), "--out", str(project.path / "bundles" / "v1"), "--cache", str(cache),
                 "--folds", "3", "--time-budget", "20"]) == 0
    return project
