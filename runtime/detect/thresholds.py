"""Per-label thresholds: the one parser of ``LABEL=X`` options, and the thresholds a stream starts from.

A bundle's per-label thresholds are F1-optimal on clip-level cross-validation, where every clip is one of
the labels; in a field stream most audio is none of them, so a stream raises a bundle threshold below
``STREAM_THRESHOLD_FLOOR`` to it (stream bench, ESC-10 fold 5 over forest soundscapes: event F1 0.844 ->
0.892, false alarms 92 -> 25 per hour). Thresholds the user gives are taken as they are.
"""

from __future__ import annotations

from typing import Iterable

from runtime.errors import ConfigError

STREAM_THRESHOLD_FLOOR = 0.5


def parse_threshold_specs(specs: Iterable[str] | None, flag: str = "--threshold") -> tuple[float | None, dict[str, float]]:
    """``["0.5", "dog=0.7,cat=0.2"]`` -> (0.5, {"dog": 0.7, "cat": 0.2}): a bare number is the default for every
    label; values must lie in [0, 1]. Labels are checked against the model by the caller (it knows them)."""
    default: float | None = None
    per_label: dict[str, float] = {}
    for spec in specs or []:
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            name, _, value = part.rpartition("=")
            try:
                x = float(value)
            except ValueError:
                raise ConfigError(f"{flag} {part!r}: expected LABEL=VALUE or VALUE",
                                  f"e.g. {flag} dog=0.7 or {flag} 0.5") from None
            if not 0.0 <= x <= 1.0:
                raise ConfigError(f"{flag} {part!r}: the value must lie in [0, 1]")
            if name.strip():
                per_label[name.strip()] = x
            else:
                default = x
    return default, per_label


def parse_label_thresholds(specs: Iterable[str] | None, flag: str = "--threshold") -> dict[str, float]:
    """Only ``LABEL=VALUE`` entries (a bare number has its own option, e.g. ``--default-threshold``)."""
    default, per_label = parse_threshold_specs(specs, flag)
    if default is not None:
        raise ConfigError(f"{flag} needs LABEL=VALUE", "e.g. --threshold dog=0.6; --default-threshold sets all labels")
    return per_label


def check_known(thresholds: dict[str, float], labels: list[str], flag: str = "--threshold") -> None:
    unknown = sorted(set(thresholds) - set(labels))
    if unknown:
        raise ConfigError(f"{flag} for unknown label {unknown[0]!r}", f"the model's labels are: {', '.join(labels)}")


def stream_thresholds(bundle_thresholds: dict[str, float], overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The bundle's thresholds raised to the stream floor, then the user's per-label values as given."""
    out = {label: max(float(t), STREAM_THRESHOLD_FLOOR) for label, t in bundle_thresholds.items()}
    out.update({label: float(v) for label, v in (overrides or {}).items()})
    return out
