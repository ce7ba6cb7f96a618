"""Per-label thresholds: the one parser of ``LABEL=X`` options, and the thresholds a stream starts from.

A bundle made by ``train`` carries stream thresholds chosen on validation streams (held-out clips over
background, with distractors) under a false-alarm budget: a stream starts from those. An older bundle only
has clip-level thresholds (F1-optimal where every clip is one of the labels); for it a stream raises a
threshold below ``LEGACY_STREAM_FLOOR`` to it. Thresholds the user gives are taken as they are.
"""

from __future__ import annotations

from typing import Iterable

from runtime.errors import ConfigError

LEGACY_STREAM_FLOOR = 0.5  # bundles without stream calibration only


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


def stream_thresholds(bundle, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The bundle's stream thresholds (or, for a bundle without them, its clip thresholds raised to the legacy
    floor), then the user's per-label values as given."""
    if bundle.stream:
        out = dict(bundle.stream["thresholds"])
    else:
        out = {label: max(float(t), LEGACY_STREAM_FLOOR) for label, t in bundle.thresholds.items()}
    out.update({label: float(v) for label, v in (overrides or {}).items()})
    return out
