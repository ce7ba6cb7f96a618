"""`make bench`: the issue-3 numbers (cold start, batch throughput, per-block costs, frontend vs librosa,
ai-edge-litert vs tflite-runtime, peak RSS), each beside a baseline measured in the same run, then the
other areas' bench modules (``tests.bench.bench_train``, ``bench_stream``, ``bench_fleet``, ``bench_fleet_load``,
``bench_openset``, ``bench_web``, ``bench_studio``: their ``main(out_dir)``; a failure is recorded, not raised).

    python -m tests.bench.run --out bench/results [--model DIR] [--quick] [--only cold,batch,...]

Writes ``bench.json`` and ``bench.md`` in --out. Timings are the minimum (or median, for whole processes)
over repeats: other work on the machine only ever makes a run slower.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.cli.main import limit_blas_threads

limit_blas_threads()  # as `fieldear predict/batch` do; before numpy is imported (this is a script)

import numpy as np  # noqa: E402

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FIELDEAR_SHARED", ROOT.parent / "shared" / "data"))
TFLRT_VENVS = (ROOT / ".venv-tflite-runtime", Path(tempfile.gettempdir()) / "fieldear-bench-tflite-runtime")
OTHER_BENCHES = ("tests.bench.bench_backbone", "tests.bench.bench_train", "tests.bench.bench_stream",
                 "tests.bench.bench_fleet", "tests.bench.bench_fleet_load", "tests.bench.bench_openset",
                 "tests.bench.bench_web", "tests.bench.bench_studio")
SECTIONS = ("cold", "batch", "blocks", "frontend", "backends")

# Runs a command and reports its wall time and peak RSS (this wrapper's only child is the command).
MEASURE = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": r.returncode, "wall_s": wall, "peak_rss_mb": kids.ru_maxrss / 1024,
                  "cpu_s": kids.ru_utime + kids.ru_stime, "stdout": r.stdout[-4000:],
                  "stderr": r.stderr[-2000:]}))
"""


def measure(cmd: list[str], env: dict | None = None, cwd: Path = ROOT) -> dict:
    r = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, env=env, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(f"measure wrapper failed: {r.stderr[-500:]}")
    return json.loads(r.stdout)


def fieldear_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("fieldear")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "runtime.cli"]


def esc10_clip() -> Path:
    return sorted((SHARED / "esc10" / "dog").glob("*.wav"))[0]


def best_of(fn, repeats: int) -> float:
    """Minimum wall time of fn() over repeats, seconds."""
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


# ---------------------------------------------------------------- sections


def bench_cold(model: Path, repeats: int) -> dict:
    """`fieldear predict` of one 5 s file in a fresh process, beside `python -c "import tensorflow"`."""
    clip = str(esc10_clip())
    predict = [*fieldear_cmd(), "-q", "predict", "--model", str(model), clip]
    runs = []
    for i in range(repeats):
        m = measure(predict)
        if m["rc"] != 0:
            raise RuntimeError(f"fieldear predict failed: {m['stderr'][-300:]}")
        runs.append(m)
        log.info("cold start %d/%d: %.2f s, %.0f MB", i + 1, repeats, m["wall_s"], m["peak_rss_mb"])
    bare = [measure([sys.executable, "-c", "pass"]) for _ in range(repeats)]
    numpy_only = [measure([sys.executable, "-c", "import numpy"]) for _ in range(repeats)]
    imports = {mod: statistics.median(measure([sys.executable, "-c", f"import {mod}"])["wall_s"] for _ in range(repeats))
               for mod in ("scipy.fft", "scipy.signal", "ai_edge_litert.interpreter", "runtime.cli", "runtime.predict.predict")}
    tf = measure([sys.executable, "-c", "import tensorflow"])
    log.info("import tensorflow: %.2f s (rc %d)", tf["wall_s"], tf["rc"])
    wall = statistics.median(r["wall_s"] for r in runs)
    out = {
        "predict_wall_s": round(wall, 3),
        "predict_wall_runs_s": [round(r["wall_s"], 3) for r in runs],
        "predict_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
        "python_bare_s": round(statistics.median(r["wall_s"] for r in bare), 3),
        "python_import_numpy_s": round(statistics.median(r["wall_s"] for r in numpy_only), 3),
        "target_wall_s": 1.0,
        "target_peak_rss_mb": 150,
    }
    if tf["rc"] == 0:
        out["import_tensorflow_s"] = round(tf["wall_s"], 3)
        out["import_tensorflow_peak_rss_mb"] = round(tf["peak_rss_mb"], 1)
        out["predict_over_import_tensorflow"] = round(wall / tf["wall_s"], 3)
    else:
        out["import_tensorflow_s"] = None
        out["import_tensorflow_note"] = "tensorflow not importable here: " + tf["stderr"].strip()[-120:]
    out["predict_over_import_numpy"] = round(wall / out["python_import_numpy_s"], 2)
    out["import_s"] = {k: round(v, 3) for k, v in imports.items()}
    return out


def bench_batch(model: Path, work: Path, jobs: int = 2) -> dict:
    """`fieldear batch` over all of ESC-10 with --jobs 2, whole process."""
    out_csv = work / "esc10_preds.csv"
    cmd = [*fieldear_cmd(), "batch", str(SHARED / "esc10"), "--out", str(out_csv), "--model", str(model),
           "--jobs", str(jobs), "--force"]
    m = measure(cmd)
    if m["rc"] not in (0, 1):
        raise RuntimeError(f"fieldear batch failed: {m['stderr'][-300:]}")
    import csv

    with open(out_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    ok = [r for r in rows if not r["error"]]
    audio = sum(float(r["duration_s"]) for r in ok)
    truth_right = sum(Path(r["path"]).parent.name == r["label"] for r in ok)
    log.info("batch: %d files, %.0f s audio in %.1f s", len(rows), audio, m["wall_s"])
    cores = min(jobs, os.cpu_count() or 1)
    return {"files": len(rows), "failed": len(rows) - len(ok), "audio_s": round(audio, 1),
            "wall_s": round(m["wall_s"], 2), "x_realtime": round(audio / m["wall_s"], 1), "jobs": jobs,
            "cpu_s": round(m["cpu_s"], 2),
            # what the same work gives when each job has a core to itself (independent of other load)
            "x_realtime_if_cores_free": round(audio / m["cpu_s"] * cores, 1),
            "peak_rss_mb_per_process": round(m["peak_rss_mb"], 1), "accuracy_vs_folder": round(truth_right / max(1, len(ok)), 4),
            "target_x_realtime": 300}


def bench_blocks(model_dir: Path, repeats: int) -> dict:
    """Microseconds per block of each step, on a real 5 s 16 kHz clip (3 blocks)."""
    from runtime.audio.files import read_audio
    from runtime.audio.resample import resample
    from runtime.features import frontend as fe
    from runtime.features.pipeline import blocks_of, stack
    from runtime.model.interpreter import Runner
    from runtime.model.model import Model

    model = Model.load(model_dir, threads=1)
    p = model.params
    x, rate = read_audio(esc10_clip())
    y = resample(x, rate, p.sample_rate)
    blocks = stack(blocks_of(x, rate, p), p)
    n = len(blocks)
    out = {"clip_s": round(len(x) / rate, 3), "clip_rate": rate, "blocks_per_clip": n, "threads": 1}
    out["resample_us"] = round(best_of(lambda: resample(x, rate, p.sample_rate), repeats) / n * 1e6, 1)
    out["frontend_us"] = round(best_of(lambda: fe.logmel(y, p), repeats) / n * 1e6, 1)
    out["pipeline_us"] = round(best_of(lambda: blocks_of(x, rate, p), repeats) / n * 1e6, 1)
    stage_in = blocks[0]
    for stage, runner in zip(model.bundle.stages, model.runners):
        runner.run_one(stage_in)
        out[f"{stage.role}_{Path(stage.file).stem}_us"] = round(best_of(lambda: runner.run_one(stage_in), repeats * 10) * 1e6, 1)
        stage_in = runner.run_one(stage_in)
    out["backend"] = model.backend_name
    del Runner
    return out


def bench_frontend(repeats: int) -> dict:
    """Our logmel vs librosa.feature.melspectrogram (+ the same log compression), same parameters and clip."""
    try:
        import librosa
    except ImportError:
        return {"skipped": "librosa is not installed (pip install librosa)"}
    from runtime.audio.files import read_audio
    from runtime.audio.resample import resample
    from runtime.features import frontend as fe

    x16, rate = read_audio(esc10_clip())
    out = {"librosa_version": librosa.__version__, "clip_s": round(len(x16) / rate, 3)}
    for name, p in (("backbone", fe.BACKBONE), ("small", fe.SMALL)):
        x = resample(x16, rate, p.sample_rate)

        def ours():
            return fe.logmel(x, p)

        def ref():
            S = librosa.feature.melspectrogram(
                y=x, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax,
                htk=True, norm=1.0, power=2.0, center=True, pad_mode="constant")
            return (np.log10(p.log_mult * S + 1) / p.log_div).T

        diff = float(np.abs(ours() - ref()).max())
        t_ours, t_ref = [], []
        # Interleaved rounds, so that load changes hit both alike; within a round each runs the same number
        # of times in a row (the first call after the other one pays page faults for fresh buffers, so an
        # unequal count would favour the side with more tries).
        for _ in range(repeats):
            t_ours.append(best_of(ours, 3))
            t_ref.append(best_of(ref, 3))
        a, b = min(t_ours), min(t_ref)
        out[name] = {"ours_ms": round(a * 1e3, 3), "librosa_ms": round(b * 1e3, 3), "speedup": round(b / a, 2),
                     "max_abs_diff": diff, "frames": int(len(ours()))}
        log.info("frontend %s: ours %.2f ms, librosa %.2f ms (%.1fx), max diff %.2g", name, a * 1e3, b * 1e3, b / a, diff)
    out["target_speedup"] = 5.0
    return out


BACKEND_CHILD = r"""
import json, sys, time
import numpy as np
from runtime.audio.files import read_audio
from runtime.model.model import Model
from runtime.features.pipeline import blocks_of, stack
model = Model.load(sys.argv[1], threads=1)
if sys.argv[4] == "reference-kernels":
    # bench-only: the same interpreter without its default delegate (XNNPACK), i.e. TFLite's builtin kernels
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    for stage, runner in zip(model.bundle.stages, model.runners):
        runner._interp = Interpreter(model_path=str(model.bundle.stage_path(stage)), num_threads=1,
                                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        runner._interp.allocate_tensors()
blocks = np.concatenate([stack(blocks_of(*read_audio(path), model.params), model.params) for path in sys.argv[2].split(",")])
scores = model.score_blocks(blocks)
first = np.stack([model.runners[0].run_one(b) for b in blocks])
step = model.runners[0].output_spec["scale"] or 1.0
times = {}
for stage, runner in zip(model.bundle.stages, model.runners):
    inp = blocks[0] if not times else out
    out = runner.run_one(inp)
    best = 1e9
    for _ in range(int(sys.argv[3])):
        t = time.perf_counter(); runner.run_one(inp); best = min(best, time.perf_counter() - t)
    times[stage.file] = best * 1e6
print(json.dumps({"backend": model.backend_name, "numpy": np.__version__, "stage_us": times,
                  "scores": scores.tolist(), "first_stage_steps": np.round(first / step).astype(int).tolist()}))
"""


def tflite_runtime_python() -> tuple[Path | None, str]:
    """A Python with tflite-runtime (the repo's .venv-tflite-runtime, or one made under /tmp)."""
    for venv in TFLRT_VENVS:
        py = venv / "bin" / "python"
        if py.exists() and subprocess.run([str(py), "-c", "import tflite_runtime.interpreter, scipy"],
                                          capture_output=True).returncode == 0:
            return py, f"existing venv {venv}"
    venv = TFLRT_VENVS[-1]
    log.info("creating a tflite-runtime venv in %s (pip install numpy<2 scipy tflite-runtime)", venv)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "numpy<2", "scipy", "tflite-runtime"], check=True,
                       capture_output=True, text=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return None, f"could not create a tflite-runtime venv: {str(detail).strip()[-200:]}"
    return venv / "bin" / "python", f"created {venv}"


def bench_backends(model: Path, repeats: int) -> dict:
    """The same blocks through ai-edge-litert and tflite-runtime, each in its own process: scores and speed."""
    clips = [sorted(d.glob("*.wav"))[0] for d in sorted((SHARED / "esc10").iterdir()) if d.is_dir()]
    clip = ",".join(map(str, clips))
    results, notes = {}, {}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # name -> (python, FIELDEAR_TFLITE_BACKEND, mode)
    interpreters = {"ai-edge-litert": (Path(sys.executable), "ai-edge-litert", "default"),
                    "ai-edge-litert reference kernels": (Path(sys.executable), "ai-edge-litert", "reference-kernels")}
    tflrt, how = tflite_runtime_python()
    notes["tflite-runtime venv"] = how
    if tflrt is not None:
        interpreters["tflite-runtime"] = (tflrt, "tflite-runtime", "default")
    for name, (py, backend, mode) in interpreters.items():
        r = subprocess.run([str(py), "-c", BACKEND_CHILD, str(model), clip, str(repeats * 10), mode], capture_output=True,
                           text=True, env=dict(env, FIELDEAR_TFLITE_BACKEND=backend), cwd=ROOT, timeout=600)
        if r.returncode != 0:
            notes[name] = "failed: " + r.stderr.strip()[-300:]
            continue
        results[name] = json.loads(r.stdout.strip().splitlines()[-1])
    out = {"notes": notes}
    for name, res in results.items():
        out[name] = {"numpy": res["numpy"], "stage_us": {k: round(v, 1) for k, v in res["stage_us"].items()}}
    if "tflite-runtime" in results:
        b = np.array(results["tflite-runtime"]["scores"])
        tb = sum(results["tflite-runtime"]["stage_us"].values())
        out["vs_tflite_runtime"] = {}
        for name in ("ai-edge-litert", "ai-edge-litert reference kernels"):
            if name not in results:
                continue
            a = np.array(results[name]["scores"])
            ea = np.array(results[name]["first_stage_steps"])
            eb = np.array(results["tflite-runtime"]["first_stage_steps"])
            out["vs_tflite_runtime"][name] = {
                "blocks": int(len(a)), "first_stage_identical": bool(np.array_equal(ea, eb)),
                "first_stage_values_differing": round(float((ea != eb).mean()), 4),
                "first_stage_max_diff_steps": int(np.abs(ea - eb).max()),
                "scores_identical": bool(np.array_equal(a, b)), "scores_max_abs_diff": float(np.abs(a - b).max()),
                "same_top_label_per_block": bool((a.argmax(1) == b.argmax(1)).all()),
                "tflite_runtime_time_ratio": round(tb / sum(results[name]["stage_us"].values()), 2)}
    else:
        out["skipped"] = "tflite-runtime not available: " + notes.get("tflite-runtime", how)
    return out


def run_other(module_name: str, out_dir: Path) -> dict:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return {"status": "absent"}
        return {"status": "failed", "error": f"import: {exc}"}
    if not hasattr(module, "main"):
        return {"status": "failed", "error": "no main(out_dir)"}
    t = time.perf_counter()
    try:
        result = module.main(str(out_dir))
    except BaseException as exc:  # recorded, never fatal: one area's bench must not hide the others'
        if isinstance(exc, KeyboardInterrupt):
            raise
        log.exception("%s failed", module_name)
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500], "wall_s": round(time.perf_counter() - t, 1)}
    return {"status": "ok", "wall_s": round(time.perf_counter() - t, 1),
            "result": result if isinstance(result, (dict, list, str, int, float)) else str(result)}


# ---------------------------------------------------------------- report


def markdown(res: dict) -> str:
    lines = ["# fieldear bench", "", f"{res['when']} on {res['machine']}", ""]
    c = res.get("cold", {})
    if "predict_wall_s" in c:
        tf = c.get("import_tensorflow_s")
        lines += ["## Cold start (`fieldear predict` of one 5 s file, fresh process)", "",
                  f"- wall {c['predict_wall_s']:.2f} s (median of {len(c['predict_wall_runs_s'])}; target <= 1.0 s); "
                  f"`python -c 'import tensorflow'` {tf if tf is None else f'{tf:.2f} s'}"
                  + (f" -> ratio {c['predict_over_import_tensorflow']:.2f}" if tf else ""),
                  f"- bare `python -c pass` {c['python_bare_s']:.2f} s, `import numpy` {c['python_import_numpy_s']:.2f} s; "
                  + ", ".join(f"`import {k}` {v:.2f} s" for k, v in c.get("import_s", {}).items()),
                  f"- peak RSS {c['predict_peak_rss_mb']:.0f} MB (target <= 150 MB)", ""]
    b = res.get("batch", {})
    if "x_realtime" in b:
        lines += ["## Throughput (`fieldear batch` over ESC-10, --jobs 2, whole process)", "",
                  f"- {b['files']} files, {b['audio_s']:.0f} s audio in {b['wall_s']:.1f} s: **{b['x_realtime']:.0f}x real time** "
                  f"(target >= 300x); accuracy vs folder {b['accuracy_vs_folder']:.3f}",
                  f"- CPU time of the whole process tree {b['cpu_s']:.1f} s -> {b['x_realtime_if_cores_free']:.0f}x real time "
                  f"when each of the {b['jobs']} jobs has a free core (load average at the start of the bench: "
                  f"{res['load_average_at_start'][0]:.1f})"]
        k = res.get("blocks", {})
        if "pipeline_us" in k:
            per_block = k["pipeline_us"] + sum(v for key, v in k.items() if key.endswith("_us") and key.split("_")[0] in ("embedding", "classifier"))
            ideal = k["clip_s"] / (k["blocks_per_clip"] * per_block * 1e-6) * b["jobs"]
            lines.append(f"- from the per-block costs below: {ideal:.0f}x with {b['jobs']} jobs and no overhead "
                         f"(batch reaches {b['x_realtime'] / ideal:.2f} of it)")
        lines.append("")
    k = res.get("blocks", {})
    if "frontend_us" in k:
        lines += ["## Per block (us, 1 thread, real 5 s 16 kHz clip)", "", "| step | us/block |", "|---|---|"]
        lines += [f"| {key[:-3]} | {val:.0f} |" for key, val in k.items() if key.endswith("_us")]
        lines.append("")
    f = res.get("frontend", {})
    if "backbone" in f:
        lines += ["## Frontend vs librosa.feature.melspectrogram (same parameters, 5 s clip)", "",
                  "| params | ours ms | librosa ms | speedup | max abs diff |", "|---|---|---|---|---|"]
        for name in ("backbone", "small"):
            r = f[name]
            lines.append(f"| {name} | {r['ours_ms']:.2f} | {r['librosa_ms']:.2f} | {r['speedup']:.1f}x | {r['max_abs_diff']:.1e} |")
        lines.append("")
    be = res.get("backends", {})
    if be:
        lines += ["## ai-edge-litert vs tflite-runtime (same blocks, separate processes)", ""]
        for name in ("ai-edge-litert", "ai-edge-litert reference kernels", "tflite-runtime"):
            if name in be:
                lines.append(f"- {name} (numpy {be[name]['numpy']}): " + ", ".join(f"{s} {v:.0f} us" for s, v in be[name]['stage_us'].items()))
        for name, cmp in be.get("vs_tflite_runtime", {}).items():
            lines.append(f"- {name} vs tflite-runtime over {cmp['blocks']} blocks of 10 clips: first stage (embedding) identical "
                         f"{cmp['first_stage_identical']} ({100 * cmp['first_stage_values_differing']:.1f}% of values differ, "
                         f"by <= {cmp['first_stage_max_diff_steps']} int8 steps); scores identical {cmp['scores_identical']} (max abs diff "
                         f"{cmp['scores_max_abs_diff']:.2g}, same top label per block {cmp['same_top_label_per_block']}); "
                         f"tflite-runtime takes {cmp['tflite_runtime_time_ratio']:.2f}x its time")
        for key, note in be.get("notes", {}).items():
            lines.append(f"- {key}: {note}")
        lines.append("")
    errors = {k: v for k, v in res.get("errors", {}).items()}
    if errors:
        lines += ["## Errors", ""] + [f"- {k}: {v}" for k, v in errors.items()] + [""]
    others = res.get("other_benches", {})
    bb = others.get("tests.bench.bench_backbone", {}).get("result")
    if isinstance(bb, dict) and "ms_per_block" in bb:
        ms = bb["ms_per_block"]
        lines += ["## Backbone: int8 TFLite vs PyTorch fp32 (same real blocks, 1 thread, alternating rounds)", "",
                  f"- PyTorch {bb['torch_version']} fp32 {ms['torch_fp32']:.1f} ms, int8 {bb['tflite_backend']} "
                  f"{ms['int8_xnnpack']:.2f} ms per block: **{bb['speedup_int8_vs_torch_fp32']:.1f}x** (target >= "
                  f"{bb['target_speedup']:.0f}x); reference int8 kernels {ms['int8_reference_kernels']:.1f} ms "
                  f"({bb['speedup_reference_kernels_vs_torch_fp32']:.1f}x)",
                  f"- embedding cosine int8 vs PyTorch over {bb['blocks']} blocks: median "
                  f"{bb['cosine_int8_vs_torch_blocks']['median']:.4f}, min {bb['cosine_int8_vs_torch_blocks']['min']:.4f}; "
                  f"clips (mean-pooled) median {bb['cosine_int8_vs_torch_clips_mean_pooled']['median']:.4f}", ""]
    fl = others.get("tests.bench.bench_fleet_load", {}).get("result")
    if isinstance(fl, dict) and "load" in fl:
        from tests.bench.bench_fleet_load import summary_lines

        lines += summary_lines(fl) + [""]
    if others:
        lines += ["## Other areas' benches", ""]
        lines += [f"- {k}: {v['status']}" + (f" ({v.get('wall_s')} s)" if v.get("wall_s") is not None else "")
                  + (f": {v['error']}" if v.get("error") else "") for k, v in others.items()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results", help="output directory (bench.json, bench.md)")
    parser.add_argument("--model", default=None, help="bundle to measure (default: the committed default model)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--only", default=None, help=f"comma-separated sections of {','.join(SECTIONS)},others")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    from runtime.model.bundle import load_bundle
    from runtime.paths import DEFAULT_BUNDLE

    model = Path(args.model) if args.model else DEFAULT_BUNDLE
    only = set(args.only.split(",")) if args.only else set(SECTIONS) | {"others"}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    repeats = 2 if args.quick else 5
    res: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}",
                 "load_average_at_start": list(os.getloadavg()), "errors": {}}
    try:
        bundle = load_bundle(model)
        res["model"] = {"path": str(model), "name": bundle.name, "sha": bundle.short_sha, "stages": [s.file for s in bundle.stages]}
    except Exception as exc:
        res["errors"]["model"] = str(exc)
        bundle = None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fieldear-bench-") as tmp:
        steps = [("frontend", lambda: bench_frontend(repeats * 3))]
        if bundle is not None:
            steps = [("cold", lambda: bench_cold(model, repeats)),
                     ("batch", lambda: bench_batch(model, Path(tmp))),
                     ("blocks", lambda: bench_blocks(model, repeats * 4)),
                     steps[0],
                     ("backends", lambda: bench_backends(model, repeats))]
        for name, fn in steps:
            if name not in only:
                continue
            log.info("--- %s", name)
            t = time.perf_counter()
            try:
                res[name] = fn()
            except Exception as exc:  # one section failing must not lose the others
                log.exception("section %s failed", name)
                res["errors"][name] = f"{type(exc).__name__}: {exc}"[:500]
            log.info("%s took %.0f s", name, time.perf_counter() - t)
    res["own_wall_s"] = round(time.perf_counter() - t0, 1)
    (out_dir / "bench.json").write_text(json.dumps(res, indent=2) + "\n")
    (out_dir / "bench.md").write_text(markdown(res) + "\n")
    if "others" in only:
        res["other_benches"] = {}
        for name in OTHER_BENCHES:
            log.info("--- %s", name)
            res["other_benches"][name] = run_other(name, out_dir)
        (out_dir / "bench.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
        (out_dir / "bench.md").write_text(markdown(res) + "\n")
    print(markdown(res))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
