"""Bundle writing is atomic and loading refuses parts that do not match (runtime/bundle.py)."""

from __future__ import annotations

import json
import os

import pytest

from runtime.errors import BundleError
from runtime.model.bundle import MODEL_JSON, canonical_sha, load_bundle, write_bundle
from runtime.paths import DEFAULT_BUNDLE

pytestmark = pytest.mark.runtime


def _meta_and_files():
    meta = json.loads((DEFAULT_BUNDLE / MODEL_JSON).read_text())
    for key in ("json_sha256", "files", "created_at"):
        meta.pop(key)
    for stage in meta["stages"]:
        stage.pop("sha256")
    files = {s["file"]: DEFAULT_BUNDLE / s["file"] for s in meta["stages"]}
    if meta.get("novelty"):
        files[meta["novelty"]["file"]] = DEFAULT_BUNDLE / meta["novelty"]["file"]
    return meta, files


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_default_bundle_is_consistent():
    b = load_bundle()
    assert b.labels and len(b.labels) == b.stages[-1].output["shape"][-1]
    assert b.sha256 == canonical_sha(b.meta)
    assert set(b.thresholds) <= set(b.labels)


def test_write_roundtrip_refuse_existing_and_force(tmp_path):
    meta, files = _meta_and_files()
    out = write_bundle(tmp_path / "m", files, meta)
    first = load_bundle(out)
    assert first.labels == meta["labels"]
    with pytest.raises(BundleError, match="exists"):
        write_bundle(out, files, meta)
    meta["name"] = "second"
    second = load_bundle(write_bundle(out, files, meta, force=True))
    assert second.name == "second" and second.sha256 != first.sha256
    assert _leftovers(tmp_path) == []


def test_label_count_mismatch_is_never_published(tmp_path):
    meta, files = _meta_and_files()
    meta["labels"] = meta["labels"][:-1]
    with pytest.raises(BundleError, match="does not match"):
        write_bundle(tmp_path / "m", files, meta)
    assert not (tmp_path / "m").exists() and _leftovers(tmp_path) == []


def test_crash_during_publish_leaves_old_bundle_and_no_debris(tmp_path, monkeypatch):
    meta, files = _meta_and_files()
    out = write_bundle(tmp_path / "m", files, meta)
    before = load_bundle(out).sha256
    real_rename = os.rename
    calls = []

    def failing_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2 and "tmp" in str(src):  # old bundle moved aside, new one about to be renamed in: crash
            raise OSError("simulated crash")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    meta["name"] = "new"
    with pytest.raises(OSError):
        write_bundle(out, files, meta, force=True)
    monkeypatch.setattr(os, "rename", real_rename)
    # the previous bundle is back in place, nothing half-written is left
    assert load_bundle(out).sha256 == before
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "head.tflite").unlink(), "missing"),
        (lambda d: (d / "head.tflite").write_bytes((d / "head.tflite").read_bytes()[:-10]), "checksum"),
        (lambda d: (d / MODEL_JSON).write_text("{not json"), "not valid JSON"),
        (lambda d: (d / MODEL_JSON).unlink(), "no model.json"),
    ],
)
def test_damaged_bundle_refused(tmp_path, damage, message):
    meta, files = _meta_and_files()
    out = write_bundle(tmp_path / "m", files, meta)
    damage(out)
    with pytest.raises(BundleError, match=message):
        load_bundle(out)


def test_consistently_edited_schema_and_shapes_refused(tmp_path):
    meta, files = _meta_and_files()
    out = write_bundle(tmp_path / "m", files, meta)
    mj = json.loads((out / MODEL_JSON).read_text())

    def rewrite(change):
        m = json.loads(json.dumps(mj))
        change(m)
        m["json_sha256"] = canonical_sha(m)  # an edit that also fixes the checksum
        (out / MODEL_JSON).write_text(json.dumps(m))

    rewrite(lambda m: m.update(schema_version=99))
    with pytest.raises(BundleError, match="schema version"):
        load_bundle(out)
    rewrite(lambda m: m["frontend"].update(n_mels=64))
    with pytest.raises(BundleError, match="input shape"):
        load_bundle(out)
    rewrite(lambda m: m["thresholds"].update(nope=0.5))
    with pytest.raises(BundleError, match="threshold"):
        load_bundle(out)
    rewrite(lambda m: m["stages"][1]["output"].update(shape=[1, 12]))
    with pytest.raises(BundleError, match="labels"):
        load_bundle(out)


def test_licence_notice_only_for_a_non_commercial_part(tmp_path):
    from runtime.model.licences import licence_notice, read_licence_notice

    assert load_bundle().licence_notice is None and read_licence_notice(None) is None
    part = {"part": "the BirdNET v2.4 backbone", "licence": "CC BY-NC-SA 4.0", "non_commercial": True}
    assert licence_notice({"licences": [{**part, "non_commercial": False}]}) is None
    meta, files = _meta_and_files()
    meta["licences"] = [part]
    out = write_bundle(tmp_path / "m", files, meta)
    notice = load_bundle(out).licence_notice
    assert notice == read_licence_notice(out)
    assert "NON-COMMERCIAL" in notice and "CC BY-NC-SA 4.0" in notice and "BirdNET" in notice


def test_fusion_needs_its_stage_layout(tmp_path):
    meta, files = _meta_and_files()
    meta["fusion"] = "birdnet+aisfx"  # on a log-mel bundle with two stages
    with pytest.raises(BundleError, match="fusion"):
        write_bundle(tmp_path / "m", files, meta)
