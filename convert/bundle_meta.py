"""What train and convert share to publish a bundle: version, thresholds from out-of-fold scores, the report beside the model files, the dataset summary."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def _fieldear_version() -> str:
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


def _dataset_summary(dataset, alias: tuple[tuple[str, str], ...] = ()) -> dict:
    summary = dataset.summary()
    if not alias:
        return summary

    def fix(v):
        if isinstance(v, str):
            for prefix, repl in alias:
                v = v.replace(prefix, repl)
            return v
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    return fix(summary)
