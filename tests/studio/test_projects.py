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


def test_labels_from_many_threads_at_once_are_all_kept(esc10, tmp_path):
    """The web server labels from several threads: each change re-reads and replaces labels.csv under the
    project's lock, so none is lost."""
    import threading

    project = Projects(tmp_path).create("p")
    clip = sorted((esc10 / "dog").iterdir())[0]
    names = [r.stored for r in project.import_files([clip] * 16)]

    def label(k: int) -> None:
        for _ in range(20):
            Projects(tmp_path).get("p").set_label([names[k]], f"l{k}")

    threads = [threading.Thread(target=label, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert project.labels() == {name: f"l{k}" for k, name in enumerate(names)}
