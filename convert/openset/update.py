"""``fieldear train --update BUNDLE``: site adaptation without the backbone.

A bundle made by ``train`` carries ``training.npz``: the int8 backbone embeddings (and block levels) of every
training clip in every training copy (as recorded, level-shifted, mixed over background), each clip's label,
CV fold and sha256, and the ``--background`` recordings' embeddings. An update refits only the head (the
bundle's own setting and pooling) against the built-in negatives and the old and new background, repeats the
int8 cross-validation and the stream calibration, and writes a new bundle whose report compares old and new.
No audio of the training clips is needed, and no backbone runs except over the new background recordings.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from runtime.errors import BundleError

log = logging.getLogger(__name__)

UPDATE_FILE = "training.npz"


def update_data(family, data) -> bytes:
    """training.npz for a bundle: every copy of every clip's block embeddings, and the user's background."""
    from convert.openset.run import file_shas

    copies = [family.inputs] + list(family.augmented)
    emb, lv, clip, copy = [], [], [], []
    for c, (embs, levels) in enumerate(zip(copies, family.levels)):
        for i, (e, l) in enumerate(zip(embs, levels)):
            emb.append(e)
            lv.append(l)
            clip.append(np.full(len(e), i))
            copy.append(np.full(len(e), c))
    fold = np.zeros(len(data.y), dtype=np.int64)
    for k, (_, va) in enumerate(data.splits):
        fold[va] = k
    bg = getattr(family, "background", []) or []
    hard = getattr(family, "hard_negatives", []) or []
    buf = io.BytesIO()
    np.savez_compressed(
        buf, emb=np.concatenate(emb).astype(np.float16), levels=np.concatenate(lv).astype(np.float32),
        clip=np.concatenate(clip).astype(np.int32), copy=np.concatenate(copy).astype(np.int16),
        y=data.y.astype(np.int16), fold=fold.astype(np.int16),
        sha=np.array([c.sha for c in data.dataset.items]), file_sha=np.array(file_shas(data.dataset)),
        fold_name=np.array([str(c.fold) if c.fold is not None else "" for c in data.dataset.items]),
        mixed_copy=np.array(1 + len(family.gains) if family.mixed is not None else -1),
        mixed_lead=np.array(family.mixed[2] if family.mixed is not None else [], dtype=np.float64),
        bg_emb=(np.concatenate([b.emb for b in bg]) if bg else np.zeros((0, 512))).astype(np.float16),
        bg_levels=(np.concatenate([b.levels for b in bg]) if bg else np.zeros(0)).astype(np.float32),
        bg_file=np.repeat(np.arange(len(bg)), [len(b.emb) for b in bg]).astype(np.int32),
        bg_name=np.array([b.name for b in bg] or [""]), bg_sha=np.array([b.sha for b in bg] or [""]),
        review=np.array([bool(getattr(c, "review", False)) for c in data.dataset.items]),
        hard_emb=(np.concatenate([h.emb for h in hard]) if hard else np.zeros((0, 512))).astype(np.float16),
        hard_item=np.repeat(np.arange(len(hard)), [len(h.emb) for h in hard]).astype(np.int32),
        hard_sha=np.array([h.sha for h in hard] or [""]), hard_category=np.array([h.category for h in hard] or [""]),
        hard_not_label=np.array([getattr(h, "not_label", "") for h in hard] or [""]))
    return buf.getvalue()


@dataclass
class UpdateData:
    copies: list[list[np.ndarray]]  # per copy, per clip: block embeddings
    levels: list[list[np.ndarray]]
    y: np.ndarray
    fold: np.ndarray
    sha: list[str]
    file_sha: list[str]
    fold_name: list[str]
    mixed_copy: int  # the copy validation streams play (-1: none)
    mixed_lead: list[float]  # its lead-in per clip (s)
    background: list  # convert.data.background.BackgroundFile
    review: list[bool] = None  # per clip: a reviewed clip from a device log (train --update --reviews)
    hard_negatives: list = None  # SimpleNamespace(emb, sha, category, not_label): rejected reviewed clips

    def drop_clips(self, keep: np.ndarray) -> None:
        """Keep only the clips where ``keep`` is True (all copies)."""
        idx = np.flatnonzero(keep)
        self.copies = [[c[i] for i in idx] for c in self.copies]
        self.levels = [[lv[i] for i in idx] for lv in self.levels]
        self.y, self.fold = self.y[idx], self.fold[idx]
        self.sha = [self.sha[i] for i in idx]
        self.file_sha = [self.file_sha[i] for i in idx]
        self.fold_name = [self.fold_name[i] for i in idx]
        self.mixed_lead = [self.mixed_lead[i] for i in idx] if self.mixed_lead else self.mixed_lead
        self.review = [self.review[i] for i in idx]

    def add_clip(self, emb: np.ndarray, levels: np.ndarray, y: int, fold: int, sha: str) -> None:
        """A reviewed clip: its plain embedding stands in every copy (level-shifted and mixed too: a field clip
        already carries the site's level and background), lead-in 0 in the mixed copy."""
        for c, lv in zip(self.copies, self.levels):
            c.append(emb)
            lv.append(levels)
        self.y, self.fold = np.append(self.y, y), np.append(self.fold, fold)
        self.sha.append(sha)
        self.file_sha.append(sha)
        self.fold_name.append("")
        if self.mixed_copy >= 0:
            self.mixed_lead.append(0.0)
        self.review.append(True)


def read_update_data(path: Path) -> UpdateData:
    from convert.data.background import BackgroundFile

    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"{path}: cannot read the training data ({exc})", "copy the whole bundle again") from None
    n_clips, n_copies = len(d["y"]), int(d["copy"].max()) + 1
    copies = [[None] * n_clips for _ in range(n_copies)]
    levels = [[None] * n_clips for _ in range(n_copies)]
    for c in range(n_copies):
        for i in range(n_clips):
            mask = (d["copy"] == c) & (d["clip"] == i)
            copies[c][i] = d["emb"][mask].astype(np.float32)
            levels[c][i] = d["levels"][mask]
    bg = [BackgroundFile(path=Path(str(name)), name=str(name), sha=str(sha),
                         emb=d["bg_emb"][d["bg_file"] == j].astype(np.float32), levels=d["bg_levels"][d["bg_file"] == j])
          for j, (name, sha) in enumerate(zip(d["bg_name"], d["bg_sha"])) if str(sha)]
    hard = []
    if "hard_emb" in d:
        not_label = d["hard_not_label"] if "hard_not_label" in d else [""] * len(d["hard_sha"])
        hard = [SimpleNamespace(emb=d["hard_emb"][d["hard_item"] == j].astype(np.float32), sha=str(sha), category=str(cat),
                                not_label=str(nl))
                for j, (sha, cat, nl) in enumerate(zip(d["hard_sha"], d["hard_category"], not_label)) if str(sha)]
    review = [bool(r) for r in d["review"]] if "review" in d else [False] * n_clips
    return UpdateData(copies=copies, levels=levels, y=d["y"].astype(np.int64), fold=d["fold"].astype(np.int64),
                      sha=[str(s) for s in d["sha"]], file_sha=[str(s) for s in d["file_sha"]], fold_name=[str(f) for f in d["fold_name"]],
                      mixed_copy=int(d["mixed_copy"]), mixed_lead=[float(x) for x in d["mixed_lead"]], background=bg,
                      review=review, hard_negatives=hard)


class CachedDataset:
    """What the training stages need to know about the original dataset, from the old bundle."""

    def __init__(self, bundle, cache: UpdateData):
        self.labels = list(bundle.labels)
        self.items = [SimpleNamespace(sha=s, file_sha=fs, label=self.labels[y], fold=f or None, review=r)
                      for s, fs, y, f, r in zip(cache.sha, cache.file_sha, cache.y, cache.fold_name, cache.review)]
        ds = bundle.meta.get("dataset") or {}
        self.fingerprint = ds.get("fingerprint", "")
        self.counts = ds.get("classes") or {}
        report = bundle.path / "report.json"
        try:
            self._summary = json.loads(report.read_text(encoding="utf-8")).get("dataset") or {}
        except (OSError, ValueError):
            self._summary = {}

    def __len__(self) -> int:
        return len(self.items)

    def summary(self) -> dict:
        return self._summary


def check_updatable(bundle, backbone_path: Path) -> dict:
    """The old bundle's head setting; one clear error when the bundle cannot be updated here."""
    from convert.bundle_meta import fieldear_version
    from runtime.model.bundle import sha256_file

    where = str(bundle.path)
    version = bundle.meta.get("fieldear_version")
    if version != fieldear_version():
        raise BundleError(f"--update {where}: the bundle was made by fieldear {version}, this is {fieldear_version()}",
                          "retrain it with `fieldear train` from the original data")
    stage = bundle.stages[0]
    if stage.role != "embedding" or stage.sha256 != sha256_file(backbone_path):
        raise BundleError(f"--update {where}: the bundle's backbone is not this fieldear's backbone",
                          "retrain it with `fieldear train` from the original data")
    setting = (bundle.meta.get("training") or {}).get("setting")
    if not (bundle.path / UPDATE_FILE).is_file() or not setting:
        raise BundleError(f"--update {where}: the bundle carries no training data ({UPDATE_FILE})",
                          "only bundles made by this version of `fieldear train` can be updated; retrain it")
    return setting


def add_reviews(cache: UpdateData, reviews, family, labels: list[str], n_folds: int) -> tuple[list, list]:
    """Reviewed clips into the training data: positives as new clips of the event's own blocks at the device's
    block hop (convert.openset.reviews.span_blocks: those partly in the clip's pre- and post-roll, the site's
    background, are not trained as the label; CV fold by a stable hash of their sha256), rejected ones as hard
    negatives with their dense blocks (returned with those of earlier updates; convert.openset.reviews.
    embed_reviews). Clips of earlier updates that are reviewed again are
    replaced by their new verdict. Returns (hard negatives, the positives of this update as (label index, fold,
    dense blocks): what the recall guard of the stream calibration scores, convert.openset.run.review_guard)."""
    from convert.openset.pool import stable_fold
    from convert.openset.reviews import REVIEW_CATEGORY, embed_reviews, span_blocks

    again = reviews.shas
    if any(r and s in again for r, s in zip(cache.review, cache.sha)):
        cache.drop_clips(np.array([not (r and s in again) for r, s in zip(cache.review, cache.sha)]))
    hard = [h for h in cache.hard_negatives if h.sha not in again]
    positives = []
    clips = reviews.train
    embs, levels = embed_reviews(clips, family)
    for c, e, lv in zip(clips, embs, levels):
        if not len(e):
            continue
        if c.negative:
            hard.append(SimpleNamespace(emb=e, sha=c.sha, category=REVIEW_CATEGORY,
                                        not_label=c.event_label if c.verdict == "reject" else ""))
        else:
            y, fold = labels.index(c.label), stable_fold(c.sha, n_folds)
            keep = span_blocks(e, c.span_s, family)  # the event's own blocks, not the pre- and post-roll
            cache.add_clip(e[keep], lv[keep], y, fold, c.sha)
            positives.append((y, fold, e))
    return hard, positives


def held_out_comparison(old_path, reviews):
    """A hook for convert.train.finish: the held-out reviewed clips scored by the old and by the new bundle."""
    from convert.openset.reviews import score_held_out

    def hook(result: dict, files: dict, meta: dict) -> None:
        import tempfile

        from runtime.model.bundle import write_bundle

        if not reviews.held_out:
            result["update"]["reviews"]["held_out_comparison"] = None
            return
        with tempfile.TemporaryDirectory(prefix="fieldear-heldout-") as tmp:
            new_path = write_bundle(Path(tmp) / "new", files, meta, force=True)
            result["update"]["reviews"]["held_out_comparison"] = {
                "before": score_held_out(old_path, reviews.held_out), "after": score_held_out(new_path, reviews.held_out)}

    return hook


def update(options) -> dict:
    """Refit the head of ``options.update`` with new background and/or reviewed clips from device logs; write the
    new bundle to ``options.out``."""
    from convert.bundle_meta import check_out
    from convert.families.backbone import BackboneFamily
    from convert.families.heads import HeadSpec
    from convert.openset.reviews import read_reviews
    from convert.openset.run import prepare_negatives
    from convert.train import CvData, candidate_rows, finish
    from runtime.model.bundle import load_bundle

    t_start = time.monotonic()
    out = check_out(options.out, options.force)
    old = load_bundle(options.update)
    family = BackboneFamily(options)
    setting = check_updatable(old, family.backbone_path)
    review_dbs = tuple(getattr(options, "reviews", ()) or ())
    if not options.background and not review_dbs:
        raise BundleError("--update needs --background DIR (recordings of the site) or --reviews DB (a device log "
                          "with reviewed detections)",
                          "record some with `fieldear background record --minutes 10 --out DIR`, or review "
                          "detections with `fieldear serve`")
    cache = read_update_data(old.path / UPDATE_FILE)
    n_folds = int(cache.fold.max()) + 1
    reviews = read_reviews(review_dbs, list(old.labels)) if review_dbs else None
    hard, positives = add_reviews(cache, reviews, family, list(old.labels), n_folds) if reviews \
        else (cache.hard_negatives, [])
    family.hard_negatives = hard
    if reviews is not None:
        family.review_guard = SimpleNamespace(positives=positives, old=dict(old.stream or {}))
    splits = [(np.flatnonzero(cache.fold != k), np.flatnonzero(cache.fold == k)) for k in range(n_folds)]
    scheme = str((old.meta.get("metrics") or {}).get("cv_scheme", "")).replace("; scores of the int8 models", "")
    data = CvData(CachedDataset(old, cache), list(old.labels), cache.y, splits, scheme or f"{n_folds} folds")
    family.load_cached(cache)
    family.specs = [HeadSpec.from_dict(setting)]
    family.negatives = prepare_negatives(family, data, options, previous=cache.background, events=hard)
    trials = family.cross_validate(data.y, data.splits, data.n_labels, options.seed, None, data.labels)
    best = next(t for t in trials if t.pooling == old.clip_pooling)
    old_metrics = old.meta.get("metrics") or {}
    extra = {"update": {"from": {"name": old.name, "sha256": old.sha256, "cv_accuracy": old_metrics.get("cv_accuracy"),
                                 "cv_macro_f1": old_metrics.get("cv_macro_f1"),
                                 "stream_validation": old_metrics.get("stream_validation")},
                        "background_added": [str(b) for b in options.background]}}
    hook = None
    if reviews is not None:
        extra["update"]["reviews"] = {**reviews.notes, "clips_in_training": int(sum(cache.review)),
                                      "hard_negatives_in_training": len(hard)}
        hook = held_out_comparison(old.path, reviews)
    log.info("updating %s: head %s refitted with %d background recording(s), %d reviewed clip(s) and %d hard "
             "negative(s) in all", old.name, best.name, len(family.background), int(sum(cache.review)), len(hard))
    return finish(options, out, data, family, best, f"the head setting of {old.name}, refitted",
                  candidate_rows([best], best, [], data), t_start, extra, before_publish=hook)
