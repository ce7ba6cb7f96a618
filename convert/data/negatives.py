"""The built-in negative set: backbone embeddings of "none of my labels" sound, shipped in the package.

Built by ``make negatives`` (``convert.tools.build_negatives``) into ``negative_set/``; sources, licences and
credit in ``negative_set/ATTRIBUTION.md`` and per item in ``negative_set/items.csv``. ``load_negatives`` is the
one loader: it checks the set was made with the caller's backbone.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import FieldearError

log = logging.getLogger(__name__)

NEGATIVE_SET_DIR = Path(__file__).with_name("negative_set")
REBUILD_HINT = "run `make negatives`"
_FILES = ("embeddings.npz", "items.csv", "manifest.json")


@dataclass(frozen=True)
class NegativeSet:
    emb: np.ndarray  # (n_blocks, 512) float32
    levels: np.ndarray  # (n_blocks,) float32 dB
    item: np.ndarray  # (n_blocks,) int64 row into items
    items: list[dict]  # rows of items.csv (kind, category, fold, file, sha256, ...)
    backbone_sha256: str

    def __len__(self) -> int:
        return len(self.emb)

    def item_blocks(self, i: int) -> np.ndarray:
        """The blocks (embeddings) of item ``i``, in order."""
        return self.emb[self.item == i]

    def subset(self, keep_blocks: np.ndarray) -> NegativeSet:
        """The blocks where the boolean mask ``keep_blocks`` (n_blocks,) is true; ``items`` is kept whole."""
        keep = np.asarray(keep_blocks)
        if keep.dtype != bool or keep.shape != (len(self.emb),):
            raise ValueError(f"keep_blocks must be a boolean mask of shape ({len(self.emb)},), got "
                             f"{keep.dtype} {keep.shape}")
        return NegativeSet(self.emb[keep], self.levels[keep], self.item[keep], self.items, self.backbone_sha256)


def load_negatives(backbone_sha256: str, root: str | Path = NEGATIVE_SET_DIR) -> NegativeSet:
    """The negative set in ``root``, made with the backbone whose file has sha256 ``backbone_sha256``."""
    root = Path(root)
    if not root.is_dir():
        raise FieldearError(f"the built-in negative set is missing: {root}", REBUILD_HINT)
    missing = [name for name in _FILES if not (root / name).is_file()]
    if missing:
        raise FieldearError(f"the built-in negative set is incomplete: {', '.join(missing)} missing in {root}",
                            REBUILD_HINT)
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        made_with = str(manifest["backbone_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FieldearError(f"the built-in negative set's manifest is unreadable: {exc}", REBUILD_HINT) from None
    if made_with != backbone_sha256:
        raise FieldearError(f"the built-in negative set was made with another backbone (sha256 {made_with[:12]}..., "
                            f"this backbone {str(backbone_sha256)[:12]}...)", REBUILD_HINT)
    try:
        with np.load(root / "embeddings.npz", allow_pickle=False) as z:
            emb = z["emb"].astype(np.float32)
            levels = z["levels"].astype(np.float32)
            item = z["item"].astype(np.int64)
        with open(root / "items.csv", newline="", encoding="utf-8") as f:
            items = list(csv.DictReader(f))
    except (OSError, ValueError, KeyError) as exc:
        raise FieldearError(f"the built-in negative set is unreadable: {exc}", REBUILD_HINT) from None
    if not (len(emb) == len(levels) == len(item)) or (len(item) and (item.min() < 0 or item.max() >= len(items))):
        raise FieldearError(f"the built-in negative set is inconsistent: {len(emb)} embeddings, {len(levels)} levels, "
                            f"{len(item)} item indices, {len(items)} items", REBUILD_HINT)
    log.debug("negative set: %d blocks of %d items from %s", len(emb), len(items), root)
    return NegativeSet(emb, levels, item, items, made_with)
