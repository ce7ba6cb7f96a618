"""A small real studio project (ESC-10 dog and rooster clips, imported and labelled) and its embedding cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from convert.studio.projects import Projects


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
