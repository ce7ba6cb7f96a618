"""What train and convert share to publish a bundle: the output check, the int8 parity rule, version,
thresholds from out-of-fold scores, model.json, the report beside the model files, the dataset summary."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from runtime.errors import BundleError, FieldearError

log = logging.getLogger(__name__)

STRICT_MAX_LOSS_POINTS = 1.0  # --strict: the most clip accuracy (in points) int8 may lose against float


def check_out(out, force: bool) -> Path:
    """The bundle directory to write: refused if it exists (unless ``force``) or is not a directory."""
    out = Path(out)
    if out.exists() and not force:
        raise BundleError(f"output directory exists: {out}", "choose another --out or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise BundleError(f"output path exists and is not a directory: {out}", "choose another --out")
    return out


def int8_parity(y_true: list[str], float_scores, int8_scores, labels: list[str], scope: str, strict: bool) -> dict:
    """Float vs int8 clip scores (report.quantization_parity) with the accuracy lost in points; with
    ``strict``, an error when int8 loses more than STRICT_MAX_LOSS_POINTS."""
    from convert.report import quantization_parity

    parity = quantization_parity(y_true, float_scores, int8_scores, labels)
    parity["int8_loss_points"] = round(100.0 * (parity["float_accuracy"] - parity["int8_accuracy"]), 3)
    parity["scope"] = scope
    log.info("int8 vs float on %d clips: top-1 agreement %.3f, accuracy %.3f vs %.3f", parity["n_clips"],
             parity["top1_agreement"], parity["int8_accuracy"], parity["float_accuracy"])
    if strict and parity["int8_loss_points"] > STRICT_MAX_LOSS_POINTS:
        raise FieldearError(
            f"int8 quantization loses {parity['int8_loss_points']:.1f} accuracy points "
            f"(float {parity['float_accuracy']:.3f}, int8 {parity['int8_accuracy']:.3f}); "
            f"--strict allows {STRICT_MAX_LOSS_POINTS:.0f}",
            "run without --strict to accept it, or add more data",
        )
    return parity


def model_meta(name: str, labels: list[str], params, stages: list, pooling: str, thresholds: dict, metrics: dict,
               dataset, **extra) -> dict:
    """model.json's content for a trained or converted model."""
    return {
        "name": name,
        "fieldear_version": fieldear_version(),
        "labels": labels,
        "frontend": params.to_dict(),
        "stages": stages,
        "clip_pooling": pooling,
        "thresholds": thresholds,
        "metrics": metrics,
        "dataset": {"fingerprint": dataset.fingerprint, "n_clips": len(dataset), "classes": dataset.counts},
        **extra,
    }


def fieldear_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fieldear")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def thresholds_from_oof(result: dict) -> tuple[dict, dict]:
    """The report's metrics and the per-label F1-optimal thresholds from the out-of-fold scores in ``result``
    (stored into ``result["thresholds"]`` too): the bundle's defaults for listen and evaluate."""
    from convert.report import report_metrics

    computed = report_metrics(result)
    thresholds = {k: round(float(v), 4) for k, v in computed["thresholds"].items()}
    result["thresholds"] = thresholds
    return computed, thresholds


def publish_bundle(out, files: dict, meta: dict, result: dict, force: bool):
    """Write the report beside the model files and publish the bundle atomically; return it loaded."""
    from convert.report import write_report
    from runtime.model.bundle import load_bundle, write_bundle

    files = dict(files)
    with tempfile.TemporaryDirectory(prefix="fieldear-report-") as tmp:
        write_report(tmp, result)
        for p in sorted(Path(tmp).iterdir()):
            files[p.name] = p.read_bytes()
        write_bundle(out, files, meta, force=force)
    return load_bundle(out)


def aliased(v, alias: tuple[tuple[str, str], ...]):
    """``v`` (a string, or lists/dicts of them) with each path prefix of ``alias`` replaced."""
    if isinstance(v, str):
        for prefix, repl in alias:
            v = v.replace(prefix, repl)
        return v
    if isinstance(v, list):
        return [aliased(x, alias) for x in v]
    if isinstance(v, dict):
        return {k: aliased(x, alias) for k, x in v.items()}
    return v


def dataset_summary(dataset, alias: tuple[tuple[str, str], ...] = ()) -> dict:
    return aliased(dataset.summary(), alias)


def clip_paths(dataset, alias: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """Every clip's path in CV order (the report's cv.paths: which file each out-of-fold score belongs to); None
    for a clip without a file (``train --update`` rebuilds clips from the embeddings a bundle carries)."""
    return aliased([str(c.path) if getattr(c, "path", None) is not None else None for c in dataset.items], alias)
