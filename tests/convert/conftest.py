"""Fixtures the open-set training tests share: a small real ESC-10 set (dog, rooster, crying baby x 8), its
embedding cache, and the bundle `fieldear train` makes from it (built once per test module)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def data(esc10, tmp_path_factory) -> Path:
    from tests.convert.test_train import _subset

    return _subset(esc10, tmp_path_factory.mktemp("data"), classes=("dog", "rooster", "crying_baby"), per_class=8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def model(data, cache, tmp_path_factory) -> Path:
    from runtime.cli.main import main

    out = tmp_path_factory.mktemp("models") / "mine"
    assert main(["train", str(data), "--out", str(out), "--cache", str(cache), "--folds", "4"]) == 0
    return out
