"""The studio's project folder model on real ESC-10 clips."""

from __future__ import annotations

import pytest

from convert.data.dataset import load_dataset
from convert.studio.projects import Projects
from runtime.errors import DatasetError


def test_import_label_and_train_manifest(esc10, tmp_path):
    projects = Projects(tmp_path)
    project = projects.create("birds")
    dog, rain = sorted((esc10 / "dog").iterdir())[:2], sorted((esc10 / "rain").iterdir())[:2]
    results = project.import_files([*dog, *rain, esc10 / "README.md", dog[0]])
    assert [r.problem is not None for r in results] == [False] * 4 + [True, False]
    assert results[-1].duplicate_of == dog[0].name
    names = [r.stored for r in results if r.stored]
    with pytest.raises(DatasetError):
        project.write_train_manifest()  # nothing labelled yet
    project.set_label(names[:2], "dog")
    project.set_label(names[2:4], "rain")
    project.set_label(names[4:], "background")
    assert project.counts() == {"background": 1, "dog": 2, "rain": 2}
    manifest, background = project.write_train_manifest()
    assert load_dataset(manifest).counts == {"dog": 2, "rain": 2}
    assert [p.name for p in background.iterdir()] == [names[4]]
    projects.rename("birds", "b2")
    with pytest.raises(DatasetError):
        projects.delete("b2", "birds")
    projects.delete("b2", "b2")
    assert projects.names() == []
