"""`fieldear serve` on the command line: refusals, --hash-password, the missing extra, and that nothing else in
runtime imports Flask."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from runtime.web.passwords import verify_password
from tests.web.conftest import ROOT

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


def fieldear(*args: str, stdin: str | None = None, timeout: float = 60, pre: str = ""):
    code = pre + "import sys; from runtime.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], input=stdin, capture_output=True, text=True, cwd=ROOT,
                          env=ENV, timeout=timeout)


BLOCK_FLASK = """
import importlib.abc, sys
class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("flask", "waitress", "werkzeug"):
            raise ImportError(f"blocked by test: {name}")
        return None
sys.meta_path.insert(0, _Refuse())
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in ("flask", "waitress") else _find(name, *a)
"""


def test_open_host_without_password_refuses_in_one_line(demo_log):
    r = fieldear("serve", "--db", str(demo_log), "--host", "0.0.0.0")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to serve on 0.0.0.0 without a password" in lines[0], r.stderr
    assert "--password-file" in lines[0]


def test_missing_db_is_one_line(tmp_path):
    r = fieldear("serve", "--db", str(tmp_path / "none.db"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no log database" in r.stderr


def test_hash_password_from_stdin(tmp_path):
    r = fieldear("serve", "--hash-password", stdin="s3cret\n")
    assert r.returncode == 0, r.stderr
    h = r.stdout.strip()
    assert verify_password(h, "s3cret") and "s3cret" not in h


def test_without_the_web_extra_one_line_with_the_pip_hint(demo_log):
    r = fieldear("serve", "--db", str(demo_log), pre=BLOCK_FLASK)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "the web extra is not installed" in lines[0] and "pip install 'fieldear[web]'" in lines[0]
    # --hash-password needs only the standard library
    assert fieldear("serve", "--hash-password", stdin="x\n", pre=BLOCK_FLASK).returncode == 0


CHILD = BLOCK_FLASK.replace("raise ImportError", "attempts.append(name); raise ImportError").replace(
    "import importlib.abc, sys", "import importlib.abc, sys\nattempts = []") + r"""
import importlib, json, pkgutil
import runtime
from runtime.cli.main import build_parser
build_parser()
failed = []
for info in pkgutil.walk_packages(runtime.__path__, "runtime."):
    try:
        importlib.import_module(info.name)
    except ImportError as exc:
        failed.append(info.name)
print(json.dumps({"failed": sorted(failed), "flask": sorted(m for m in sys.modules if m.split(".")[0] in ("flask", "waitress"))}))
"""


def test_runtime_imports_flask_only_in_the_web_app_modules():
    r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # without Flask only the modules that are the web app itself fail to import; everything else
    # (the CLI with `serve` registered, settings, passwords, images) works
    failing = {m for m in out["failed"] if not m.startswith(("runtime.fleet",))}  # paho-mqtt may be absent too
    assert failing <= {"runtime.web.app", "runtime.web.api", "runtime.web.pages"}, out["failed"]
    assert out["flask"] == []


def test_cli_does_not_import_flask():
    code = ("import sys; from runtime.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'waitress', 'werkzeug', 'jinja2')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_serve_starts_without_the_models_imports(log_copy):
    """The server's memory budget (60 MB RSS, bench_web) has no room for numpy/scipy at start: checking the bundle's
    licence notice once pulled in the whole model path (66 MB at start instead of 37 MB). Only a spectrogram may
    import them, later."""
    probe = ("import sys, runtime.web.server as s\n"
             "s.serve = lambda settings, **kw: print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'numpy', 'scipy', 'ai_edge_litert', 'tflite_runtime'}))\n")
    r = fieldear("serve", "--db", str(log_copy), "--port", "8799", pre=probe)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
