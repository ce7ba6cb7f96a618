"""The model bundle: a directory with TFLite stage files and a self-describing ``model.json``.

model.json (schema 1)::

    schema_version, fieldear_version, created_at, name, labels, frontend {FrontendParams},
    stages: [{file, role, sha256, input: {shape, dtype, scale, zero_point},
              output: {shape, dtype, scale, zero_point}}],       # run in order, block -> scores
    clip_pooling: "mean", thresholds {label: float}, metrics {...}, dataset {...},
    stream {thresholds {label: float}, smoothing, hysteresis, min_event_s, merge_gap_s, ...}   # optional
    novelty {file, tau {label: float}, ...}                                               # optional
    licences: [{part, licence, url, non_commercial, attribution, file}]   # optional: parts under their own licence
    fusion: "birdnet+aisfx"          # optional: stages 1 and 2 embed the same window, stage 3 classifies both
    json_sha256: sha256 of the canonical JSON of everything else (catches hand edits)

``thresholds`` are clip-level (F1-optimal on cross-validated clips: predict, batch). ``stream`` holds the
detection settings ``train`` chose on validation streams (listen's defaults); ``novelty`` the out-of-
distribution rule (runtime.model.novelty) over the embedding stage's output.

A bundle is written to a temporary directory beside the target and renamed into place, so a crash
never leaves half of one. ``load_bundle`` refuses a bundle whose parts do not match.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import BundleError
from runtime.features.frontend import FrontendParams
from runtime.model.licences import MODEL_JSON, licence_notice
from runtime.paths import DEFAULT_BUNDLE

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
POOLINGS = ("mean", "max")  # clip pooling: how block scores become a clip score (runtime.model.model.pool_scores)


@dataclass(frozen=True)
class Stage:
    file: str
    role: str
    sha256: str
    input: dict
    output: dict


@dataclass
class Bundle:
    path: Path
    name: str
    labels: list[str]
    frontend: FrontendParams
    stages: list[Stage]
    clip_pooling: str
    thresholds: dict[str, float]
    meta: dict = field(repr=False)
    stream: dict = field(default_factory=dict)  # listen's detection defaults chosen on validation streams ({}: none)
    novelty: dict | None = None  # {"file", "tau"}: the out-of-distribution rule (None: none)
    fusion: str | None = None  # runtime.model.fusion (None: the stages run one after the other)

    @property
    def sha256(self) -> str:
        """Identity of the bundle: its model.json checksum (which covers every file's sha256)."""
        return self.meta["json_sha256"]

    @property
    def short_sha(self) -> str:
        return self.sha256[:12]

    def stage_path(self, stage: Stage) -> Path:
        return self.path / stage.file

    def threshold(self, label: str, default: float = 0.5) -> float:
        return float(self.thresholds.get(label, default))

    @property
    def licence_notice(self) -> str | None:
        return licence_notice(self.meta)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical_sha(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "json_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _require(meta: dict, key: str, kind, where: str):
    if key not in meta:
        raise BundleError(f"{where}: model.json has no '{key}'", "rebuild the bundle with `fieldear train` or `fieldear convert`")
    value = meta[key]
    if not isinstance(value, kind):
        raise BundleError(f"{where}: model.json '{key}' has the wrong type ({type(value).__name__})")
    return value


def load_bundle(path: str | os.PathLike | None = None, verify_files: bool = True) -> Bundle:
    """Load and check a bundle directory (default: the committed default model)."""
    root = Path(path) if path is not None else DEFAULT_BUNDLE
    where = str(root)
    if not root.exists():
        raise BundleError(f"model directory not found: {where}", "pass --model DIR pointing at a bundle made by `fieldear train`")
    if not root.is_dir():
        raise BundleError(f"model path is not a directory: {where}", "a bundle is a directory with model.json and .tflite files")
    mj = root / MODEL_JSON
    if not mj.is_file():
        raise BundleError(f"{where}: no {MODEL_JSON} in the model directory", "pass the directory `fieldear train --out` created")
    try:
        meta = json.loads(mj.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{where}: {MODEL_JSON} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{where}: {MODEL_JSON} is not a JSON object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{where}: bundle schema version {version!r}, this fieldear reads {SCHEMA_VERSION}", "rebuild the bundle or upgrade fieldear")
    stored = _require(meta, "json_sha256", str, where)
    if canonical_sha(meta) != stored:
        raise BundleError(f"{where}: {MODEL_JSON} checksum mismatch (the file was edited or damaged)", "restore the bundle from its source; do not edit model.json by hand")

    labels = _require(meta, "labels", list, where)
    if not labels or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
        raise BundleError(f"{where}: labels must be a non-empty list of distinct names")
    frontend = FrontendParams.from_dict(_require(meta, "frontend", dict, where))
    stages = []
    for i, s in enumerate(_require(meta, "stages", list, where)):
        try:
            stage = Stage(file=str(s["file"]), role=str(s["role"]), sha256=str(s["sha256"]),
                          input=dict(s["input"]), output=dict(s["output"]))
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{where}: stage {i} in {MODEL_JSON} is incomplete") from None
        if Path(stage.file).name != stage.file:
            raise BundleError(f"{where}: stage file name {stage.file!r} must be a plain file name")
        stages.append(stage)
    if not stages:
        raise BundleError(f"{where}: the bundle has no model stages")
    last_out = stages[-1].output.get("shape") or []
    if not last_out or last_out[-1] != len(labels):
        raise BundleError(f"{where}: model output size {last_out[-1] if last_out else '?'} does not match {len(labels)} labels")
    first_in = stages[0].input.get("shape") or []
    block_shape = (frontend.block_frames,) if frontend.kind == "raw" else (frontend.block_frames, frontend.n_mels)
    if tuple(first_in[1 : 1 + len(block_shape)]) != block_shape:
        raise BundleError(
            f"{where}: model input shape {first_in} does not match frontend blocks "
            f"({frontend.block_frames} frames x {frontend.n_mels} mels)"
        )
    thresholds = _require(meta, "thresholds", dict, where) if "thresholds" in meta else {}
    for k, v in thresholds.items():
        if k not in labels or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise BundleError(f"{where}: threshold for {k!r} must be a label's and in [0, 1]")
    pooling = meta.get("clip_pooling", "mean")
    if pooling not in POOLINGS:
        raise BundleError(f"{where}: unknown clip_pooling {pooling!r}")
    stream = _stream_defaults(meta, labels, where)
    novelty = meta.get("novelty")
    if novelty is not None:
        if not isinstance(novelty, dict) or not isinstance(novelty.get("file"), str) or \
                Path(novelty["file"]).name != novelty["file"] or not isinstance(novelty.get("tau"), dict):
            raise BundleError(f"{where}: model.json 'novelty' needs a plain file name and a tau table")
        if stages[0].role != "embedding" or len(stages) < 2:
            raise BundleError(f"{where}: 'novelty' needs an embedding stage first")
    fusion = meta.get("fusion")
    if fusion is not None:
        from runtime.model.fusion import FUSIONS

        if fusion not in FUSIONS or [s.role for s in stages] != ["embedding", "embedding", "classifier"] or \
                frontend.kind != "raw" or novelty is not None:
            raise BundleError(f"{where}: model.json 'fusion' {fusion!r} needs a raw frontend, two embedding stages "
                              "and a classifier, and no novelty rule", "rebuild the bundle with `fieldear train`")
    if verify_files:
        checked = [(s.file, s.sha256) for s in stages]
        if novelty is not None:
            checked.append((novelty["file"], str((meta.get("files") or {}).get(novelty["file"], ""))))
        for file, sha in checked:
            fp = root / file
            if not fp.is_file():
                raise BundleError(f"{where}: model file {file} is missing")
            if sha256_file(fp) != sha:
                raise BundleError(f"{where}: {file} checksum mismatch (file damaged or replaced)", "copy the whole bundle again")
    return Bundle(path=root, name=str(meta.get("name", root.name)), labels=list(labels), frontend=frontend,
                  stages=stages, clip_pooling=pooling, thresholds={k: float(v) for k, v in thresholds.items()},
                  meta=meta, stream=stream, novelty=novelty, fusion=fusion)


STREAM_KEYS = {"smoothing": int, "hysteresis": float, "min_event_s": float, "merge_gap_s": float}


def _stream_defaults(meta: dict, labels: list[str], where: str) -> dict:
    """model.json 'stream': per-label thresholds and the detection settings, checked ({} when absent)."""
    stream = meta.get("stream")
    if stream is None:
        return {}
    bad = BundleError(f"{where}: model.json 'stream' is malformed", "rebuild the bundle with `fieldear train`")
    if not isinstance(stream, dict) or not isinstance(stream.get("thresholds"), dict):
        raise bad
    th = stream["thresholds"]
    if set(th) != set(labels) or not all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in th.values()):
        raise bad
    out = {"thresholds": {k: float(v) for k, v in th.items()}}
    for key, kind in STREAM_KEYS.items():
        if key in stream:
            if not isinstance(stream[key], (int, float)) or stream[key] < 0:
                raise bad
            out[key] = kind(stream[key])
    return out


def utc_now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def write_bundle(out_dir: str | os.PathLike, files: dict[str, bytes | Path], meta: dict, force: bool = False) -> Path:
    """Write ``files`` (name -> bytes or source path) and model.json atomically into out_dir.

    ``meta`` must contain stages without sha256 (filled in here), labels, frontend, etc.
    An existing out_dir is refused unless ``force``; then it is replaced only after the new one is complete.
    """
    out = Path(out_dir)
    if out.exists() and not force:
        raise BundleError(f"output directory exists: {out}", "choose another --out or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = None
    try:
        for name, content in files.items():
            dest = tmp / name
            if isinstance(content, (bytes, bytearray)):
                dest.write_bytes(content)
            else:
                shutil.copyfile(content, dest)
        meta = json.loads(json.dumps(meta))  # deep copy, and proves it is JSON
        for stage in meta["stages"]:
            stage["sha256"] = sha256_file(tmp / stage["file"])
        meta.setdefault("schema_version", SCHEMA_VERSION)
        meta.setdefault("created_at", utc_now_iso())
        meta["files"] = {name: sha256_file(tmp / name) for name in sorted(files)}
        meta["json_sha256"] = canonical_sha(meta)
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for p in list(tmp.iterdir()):
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        load_bundle(tmp)  # never publish a bundle the runtime would refuse
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out.exists():
            os.rename(old, out)  # put the previous bundle back
        raise
    log.debug("wrote bundle %s", out)
    return out
