"""`fieldear convert`: a user's Keras model on fieldear blocks becomes a checked int8 bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.cli.main import main
from tests.convert.test_train import _subset

pytestmark = pytest.mark.train

CLASSES = ("crying_baby", "rain", "rooster")


@pytest.fixture(scope="module")
def data(esc10, tmp_path_factory) -> Path:
    return _subset(esc10, tmp_path_factory.mktemp("convert_data"), classes=CLASSES, per_class=4)


def _trained_keras(data: Path, path: Path, channel: bool) -> Path:
    """A tiny Keras model trained for a few epochs on SMALL blocks of the data."""
    import keras

    from convert.families.embed import clip_blocks
    from runtime.features.frontend import SMALL

    xs, ys = [], []
    for k, label in enumerate(sorted(CLASSES)):
        for wav in sorted((data / label).glob("*.wav")):
            b = clip_blocks(wav, SMALL)
            xs.append(b)
            ys.append(np.full(len(b), k))
    x, y = np.concatenate(xs), np.concatenate(ys)
    keras.utils.set_random_seed(0)
    shape = (SMALL.block_frames, SMALL.n_mels) + ((1,) if channel else ())
    inputs = keras.Input(shape=shape)
    h = keras.layers.Reshape((SMALL.block_frames, SMALL.n_mels, 1))(inputs) if not channel else inputs
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(len(CLASSES), activation="softmax")(h)
    model = keras.Model(inputs, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x.reshape((len(x),) + shape), y, epochs=15, batch_size=16, verbose=0)
    model.save(path)
    return path


@pytest.mark.parametrize("channel", [False, True])
def test_convert_a_keras_model(data, tmp_path, channel):
    from convert.families.embed import clip_blocks
    from runtime.model.model import Model

    src = _trained_keras(data, tmp_path / "mine.keras", channel)
    out = tmp_path / "byo"
    assert main(["convert", str(src), "--data", str(data), "--out", str(out)]) == 0
    model = Model.load(out)
    assert model.labels == sorted(CLASSES)
    assert [s.role for s in model.bundle.stages] == ["classifier"]
    assert model.runners[0].input_spec["dtype"] == "int8"
    assert model.params.sample_rate == 16000 and model.runners[0].input_shape == (1, 62, 64)
    meta = json.loads((out / "model.json").read_text())
    q = meta["metrics"]["quantization"]
    assert q["n_clips"] == 12 and q["top1_agreement"] >= 0.9
    # the bundle agrees with the Keras model it came from
    import keras

    keras_model = keras.models.load_model(src, compile=False)
    wav = sorted((data / "rain").glob("*.wav"))[0]
    blocks = clip_blocks(wav, model.params)
    want = keras_model.predict(blocks.reshape((len(blocks),) + tuple(keras_model.inputs[0].shape[1:])), verbose=0)
    got = model.score_blocks(blocks)
    assert np.abs(got - want).max() < 0.08
    for name in ("report.md", "report.json", "confusion.png"):
        assert (out / name).is_file()


def test_shape_mismatch_names_both_shapes(data, tmp_path, capsys):
    import keras

    inputs = keras.Input(shape=(40, 64))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs)))
    path = tmp_path / "wrong.keras"
    model.save(path)
    code = main(["convert", str(path), "--data", str(data), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "(40, 64)" in err and "(62, 64)" in err
    assert not (tmp_path / "x").exists()
    # the same model against the backbone frontend names that shape
    code = main(["convert", str(path), "--data", str(data), "--out", str(tmp_path / "x"), "--frontend", "backbone"])
    assert code != 0 and "(100, 96)" in capsys.readouterr().err


def test_output_count_must_match_labels(data, tmp_path, capsys):
    import keras

    inputs = keras.Input(shape=(62, 64))
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(inputs)))
    path = tmp_path / "five.keras"
    model.save(path)
    code = main(["convert", str(path), "--data", str(data), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code != 0 and "5 outputs" in err and "3 labels" in err


def test_not_a_keras_file(data, tmp_path, capsys):
    bogus = tmp_path / "bogus.keras"
    bogus.write_text("not a model")
    code = main(["convert", str(bogus), "--data", str(data), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code != 0 and "cannot load Keras model" in err and "Traceback" not in err
