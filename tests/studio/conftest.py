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


@pytest.fixture(scope="module")
def trained_project(esc10, tmp_path_factory, cache):
    """A small project and its bundle bundles/v1, made by `fieldear train` on the project's manifest."""
    from runtime.cli.main import main

    project = labelled_project(esc10, tmp_path_factory.mktemp("projects"))
    manifest, _ = project.write_train_manifest()
    assert main(["train", str(manifest), "--out", str(project.path / "bundles" / "v1"), "--cache", str(cache),
                 "--folds", "3", "--time-budget", "20"]) == 0
    return project
