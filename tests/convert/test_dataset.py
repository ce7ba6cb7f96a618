"""convert.data.dataset: import of real ESC-10 clips with generated bad files, manifests, errors."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from convert.data import dataset as ds
from convert.data.dataset import Clip, load_dataset, write_manifest
from runtime.errors import DatasetError

sf = pytest.importorskip("soundfile")  # train extra; not needed by the device run (-m runtime)

LABELS = ("dog", "rain", "rooster")


def _real_clips(esc10: Path, label: str, n: int) -> list[Path]:
    return sorted((esc10 / label).glob("*.wav"))[:n]


def make_folder(root: Path, esc10: Path, per_label: int = 3, labels=LABELS) -> Path:
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for src in _real_clips(esc10, label, per_label):
            shutil.copy(src, root / label / src.name)
    return root


@pytest.fixture
def messy(tmp_path, esc10):
    """3 labels x 3 real clips, plus one of each bad kind and a re-encoded duplicate."""
    root = make_folder(tmp_path / "data", esc10)
    dog = root / "dog"
    real = _real_clips(esc10, "dog", 1)[0]
    x, rate = sf.read(real, dtype="float32")
    (dog / "zero.wav").write_bytes(b"")
    (dog / "notes.wav").write_text("this is a text file, not audio\n")
    sf.write(dog / "silent.wav", np.zeros(rate, dtype=np.float32), rate, subtype="PCM_16")
    sf.write(dog / "short.wav", x[: int(0.05 * rate)], rate, subtype="PCM_16")
    bad = x.copy()
    bad[100] = np.nan
    sf.write(dog / "nan.wav", bad, rate, subtype="FLOAT")
    (dog / "deep").mkdir()
    sf.write(dog / "deep" / "copy_float.wav", x, rate, subtype="FLOAT")  # same audio, other encoding
    (dog / "readme.txt").write_text("ignored: not an audio suffix")
    (dog / ".hidden.wav").write_bytes(b"")
    return root


def test_folder_import_lists_problems_and_goes_on(messy, caplog):
    caplog.set_level(logging.INFO)
    d = load_dataset(messy)
    assert d.labels == list(LABELS)
    assert d.counts == {"dog": 4, "rain": 3, "rooster": 3}
    kinds = {p.path.name: p.kind for p in d.problems}
    assert kinds == {
        "zero.wav": "empty",
        "notes.wav": "not_audio",
        "silent.wav": "silent",
        "short.wav": "too_short",
        "nan.wav": "non_finite",
    }
    assert all(p.message for p in d.problems)
    assert "5 of 15 files left out" in caplog.text
    # the float32 copy is found recursively and is a duplicate of the PCM-16 original
    names = {d.items[i].path.name for group in d.duplicates for i in group}
    original = next(c.path.name for c in d.items if c.path.parent.name == "dog" and c.path.name.startswith("esc10_"))
    assert names == {original, "copy_float.wav"}
    assert "duplicate audio" in caplog.text
    clip = next(c for c in d.items if c.path.name == "copy_float.wav")
    assert clip.duration_s == pytest.approx(5.0, abs=0.01) and clip.fold is None and clip.group is None
    summary = d.summary()
    assert summary["n_duplicate_clips"] == 1 and summary["problem_counts"]["silent"] == 1


def test_same_audio_same_sha_in_any_encoding(tmp_path, esc10):
    src = _real_clips(esc10, "rain", 1)[0]
    x, rate = sf.read(src, dtype="float32")
    variants = {"pcm24.wav": ("PCM_24", x), "pcm32.wav": ("PCM_32", x), "f.flac": ("PCM_16", x),
                "stereo.wav": ("PCM_16", np.stack([x, x], axis=1))}
    paths = [src]
    for name, (subtype, data) in variants.items():
        sf.write(tmp_path / name, data, rate, subtype=subtype)
        paths.append(tmp_path / name)
    shas = {ds.check_file(p)[1] for p in paths}
    assert len(shas) == 1
    louder = tmp_path / "louder.wav"
    sf.write(louder, x * 0.5, rate, subtype="PCM_16")
    assert ds.check_file(louder)[1] not in shas


def test_fingerprint_depends_on_audio_and_labels_only(tmp_path, esc10):
    a = load_dataset(make_folder(tmp_path / "a", esc10, per_label=2))
    b = load_dataset(make_folder(tmp_path / "b", esc10, per_label=2))
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    rows = [(c.path, c.label if c.label != "rain" else "drizzle") for c in a.items]
    c = load_dataset(write_manifest(rows, tmp_path / "m.csv"))
    assert c.fingerprint != a.fingerprint


def test_manifest_with_folds_groups_and_relative_paths(tmp_path, esc10):
    root = make_folder(tmp_path / "audio", esc10, per_label=2)
    rows = []
    for i, path in enumerate(sorted(root.glob("*/*.wav"))):
        rows.append({"path": path, "label": path.parent.name, "fold": i % 2 + 1, "group": f"g{i // 2}"})
    manifest = write_manifest(rows, tmp_path / "manifest.csv")
    text = manifest.read_text().splitlines()
    assert text[0] == "path,label,fold,group" and text[1].startswith("audio/dog/")
    d = load_dataset(manifest)
    assert len(d) == 6
    assert [c.fold for c in d.items] == ["1", "2"] * 3
    assert d.items[0].group == "g0" and d.items[0].path == root / "dog" / d.items[0].path.name
    # 'file' is accepted for 'path', extra columns are ignored, BOM and blank lines are fine
    other = tmp_path / "other.csv"
    body = "\n".join(f"{line.split(',')[0]},{line.split(',')[1]},x" for line in text[1:])
    other.write_text("\ufefffile,label,comment\n" + body + "\n\n", encoding="utf-8")
    assert load_dataset(other).fingerprint == d.fingerprint


def test_manifest_errors_name_the_row(tmp_path, esc10):
    root = make_folder(tmp_path / "audio", esc10, per_label=2)
    files = sorted(root.glob("*/*.wav"))
    lines = [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in files]

    def load(text):
        csv = tmp_path / "m.csv"
        csv.write_text(text)
        with pytest.raises(DatasetError) as info:
            load_dataset(csv)
        return str(info.value)

    assert "no 'label' column" in load("path,fold\n" + "\n".join(lines))
    message = load("path,label\n" + "\n".join(lines[:3] + ["audio/dog/missing.wav,dog"] + lines[3:]))
    assert "row 5: audio/dog/missing.wav" in message
    message = load("path,label\n" + "\n".join(lines[:2] + [f"{lines[2].split(',')[0]},"] + lines[3:]))
    assert "row 4: empty label" in message
    assert "empty manifest" in load("")
    assert "lists no files" in load("path,label\n")


def test_dataset_errors(tmp_path, esc10):
    empty = tmp_path / "empty"
    (empty / "dog").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no audio files"):
        load_dataset(empty)
    with pytest.raises(DatasetError, match="only one label"):
        load_dataset(make_folder(tmp_path / "one", esc10, labels=("dog",)))
    few = make_folder(tmp_path / "few", esc10, per_label=3, labels=("dog", "rain"))
    (few / "rooster").mkdir()
    shutil.copy(_real_clips(esc10, "rooster", 1)[0], few / "rooster")
    with pytest.raises(DatasetError, match="'rooster' has 1.*at least 2 clips per label") as info:
        load_dataset(few)
    assert info.value.hint
    bad = tmp_path / "bad"
    for label in ("a", "b"):
        (bad / label).mkdir(parents=True)
        (bad / label / "x.wav").write_bytes(b"")
        (bad / label / "y.wav").write_text("hello")
    with pytest.raises(DatasetError, match="none of the 4 files is usable"):
        load_dataset(bad)
    # all clips of one label bad, the others fine: that label is named
    lost = make_folder(tmp_path / "lost", esc10, per_label=2, labels=("dog", "rain"))
    (lost / "wind").mkdir()
    (lost / "wind" / "w.wav").write_bytes(b"")
    with pytest.raises(DatasetError, match="'wind' has 0"):
        load_dataset(lost)
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "nope")


def test_imbalance_warning_and_progress(tmp_path, esc10, caplog, monkeypatch):
    root = make_folder(tmp_path / "d", esc10, per_label=7, labels=("dog",))
    make_folder(root, esc10, per_label=2, labels=("rain",))
    monkeypatch.setattr(ds, "PROGRESS_EVERY", 4)
    caplog.set_level(logging.INFO)
    d = load_dataset(root)
    assert d.counts == {"dog": 7, "rain": 2}
    assert "imbalanced" in caplog.text and "3.5x" in caplog.text
    few = [r.getMessage() for r in caplog.records if r.getMessage().startswith("few clips")]
    assert len(few) == 1 and "'rain' has 2 (fewer than 5)" in few[0] and "dog" not in few[0]
    assert "checked 4/9 files" in caplog.text and "checked 9/9 files" in caplog.text
    caplog.clear()
    make_folder(root, esc10, per_label=6, labels=("rain",))
    load_dataset(root)
    assert "imbalanced" not in caplog.text and "few clips" not in caplog.text


def test_read_decodes_at_target_rate(tmp_path, esc10):
    d = load_dataset(make_folder(tmp_path / "d", esc10, per_label=2, labels=("dog", "rain")), target_rate=8000)
    x, rate = d.read(0)
    assert rate == 8000 and x.dtype == np.float32 and abs(len(x) - 5 * 8000) <= 8


def test_write_manifest_rows(tmp_path):
    out = write_manifest(
        [("/elsewhere/a.wav", "x"), Clip(tmp_path / "s" / "b.wav", "y", "2", None, 1.0, "0" * 64)],
        tmp_path / "m.csv",
    )
    assert out.read_text().splitlines() == ["path,label,fold,group", "/elsewhere/a.wav,x,,", "s/b.wav,y,2,"]
    with pytest.raises(ValueError):
        write_manifest([{"path": "a.wav"}], tmp_path / "n.csv")
