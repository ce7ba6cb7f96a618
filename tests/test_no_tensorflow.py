"""runtime/ never imports TensorFlow: every runtime module is imported, and a real clip predicted,
in a fresh interpreter whose import system refuses tensorflow, keras and tf_keras."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.predict.test_predict import model_dir, real_clip

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import importlib, importlib.abc, json, pkgutil, sys

BLOCKED = ("tensorflow", "keras", "tf_keras")
attempts = []

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ImportError(f"blocked by test: {name}")
        return None

sys.meta_path.insert(0, Refuse())

import runtime
imported, optional_missing = [], {}
for info in pkgutil.walk_packages(runtime.__path__, "runtime."):
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except ImportError as exc:
        if attempts:
            raise
        # a third-party optional dependency absent from this venv (not TensorFlow): note it
        optional_missing[info.name] = str(exc)

from runtime.model.model import Model
from runtime.predict.predict import predict_file
from runtime.cli.main import build_parser
build_parser()
model = Model.load(sys.argv[1], threads=1)
pred = predict_file(model, sys.argv[2])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"attempts": attempts, "heavy": heavy, "imported": imported, "optional_missing": optional_missing,
                  "label": pred.label, "n_blocks": pred.n_blocks, "backend": model.backend_name}))
"""


def test_runtime_never_imports_tensorflow(esc10):
    clip = real_clip(esc10, "dog", 1)
    r = subprocess.run([sys.executable, "-c", CHILD, str(model_dir()), str(clip)], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["attempts"] == [], out["attempts"]
    assert out["heavy"] == []
    assert {"runtime.predict.predict", "runtime.predict.batch", "runtime.evaluate.clip_eval", "runtime.cli.predict", "runtime.model.model",
            "runtime.audio.files"} <= set(out["imported"])
    assert out["n_blocks"] >= 1 and out["label"]
    assert out["backend"] in ("ai-edge-litert", "tflite-runtime")
