"""The open-set stages of ``fieldear train``: gather the negatives before cross-validation, and after it listen
to the validation streams with each fold's int8 model to choose listen's defaults and the novelty rule."""

from __future__ import annotations

import logging

import numpy as np

from convert.openset.calibrate import (
    NOVELTY_QUANTILES,
    build_timeline,
    choose,
    keep_review_recall,
    validate,
)
from convert.openset.pool import NegativePool, build_pool
from convert.openset.streams import compose_stream
from runtime.errors import DatasetError
from runtime.model.novelty import Novelty, unit_rows

log = logging.getLogger(__name__)

LABEL_LIKE_FILE_SHARE = 0.5  # a --background file with this share of label-like blocks is refused


def loud_blocks(family, i: int) -> np.ndarray:
    """Clip i's blocks less than the quiet margin below its loudest (plain copy)."""
    emb, lv = family.inputs[i], family.levels[0][i]
    return emb[~family.quiet(lv)] if len(emb) else emb


def prepare_negatives(family, data, options, previous: list | None = None, events: list | None = None) -> NegativePool:
    """The built-in negatives, ``previous`` background recordings (an updated bundle's) and ``--background``,
    label-like blocks dropped; bad backgrounds refused; ``events``: hard negatives (reviewed clips people
    rejected, convert.openset.pool.build_pool). The background is kept on the family (``background``).

    The built-in negatives are the committed negative set when it was made with the family's backbone
    (``family.builtin_set``: aisfx), else the committed bed recordings (convert/data/negative_set/beds) embedded by
    the family itself (BirdNET: only audio can be embedded by another backbone, and the set holds embeddings)."""
    from convert.data.background import load_background
    from runtime.model.bundle import sha256_file

    builtin, beds = None, []
    if options.builtin_negatives and getattr(family, "builtin_set", True):
        from convert.data.negatives import load_negatives

        builtin = load_negatives(sha256_file(family.backbone_path))
    elif options.builtin_negatives:
        beds = builtin_bed_files(family)
    background = list(previous or []) + load_background(options.background, family.clip_embeddings)
    family.background = background
    positives = [loud_blocks(family, i) for i in range(len(data.y))]
    pool = build_pool(builtin, background, positives, data.y, set(file_shas(data.dataset)), data.labels,
                      len(data.splits), events=events, beds=beds)
    check_background(pool.notes["background_files"])
    return pool


def builtin_bed_files(family) -> list:
    """The committed bed recordings (convert.openset.mixing.builtin_beds) as embedded by ``family``."""
    from convert.data.background import BackgroundFile, audio_clips
    from convert.openset.mixing import builtin_beds

    clips = audio_clips(builtin_beds())
    embs, levels = family.clip_embeddings(clips)
    return [BackgroundFile(path=c.path, name=c.path.name, sha=c.sha, emb=e, levels=lv)
            for c, e, lv in zip(clips, embs, levels) if len(e)]


def file_shas(dataset) -> list[str]:
    """sha256 of each training clip's file (the built-in set names its sources by file sha256)."""
    from runtime.model.bundle import sha256_file

    return [c.file_sha if hasattr(c, "file_sha") else sha256_file(c.path) for c in dataset.items]


def check_background(files: list[dict]) -> None:
    """Refuse background recordings that mostly sound like a label; warn about those that partly do."""
    bad = [f for f in files if f["blocks"] and f["dropped_label_like"] / f["blocks"] >= LABEL_LIKE_FILE_SHARE]
    if bad:
        names = ", ".join(f"{f['file']} ({f['like']}, {f['dropped_label_like']}/{f['blocks']} blocks)" for f in bad[:3])
        raise DatasetError(f"--background holds recordings that sound like a label: {names}"
                           + (f" and {len(bad) - 3} more" if len(bad) > 3 else ""),
                           "remove them from the background folder (or label them and add them to the training data)")
    partly = sorted((f for f in files if f["dropped_label_like"]), key=lambda f: -f["dropped_label_like"])
    if partly:
        log.warning("--background: blocks that sound like a label were left out: %s",
                    ", ".join(f"{f['file']} ({f['like']}: {f['dropped_label_like']}/{f['blocks']})" for f in partly[:3]))


def heard(family, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(block embeddings, loud mask) of clip i as a validation stream plays it: mixed over background when the
    family made that copy, else as recorded. The mixed copy's loud blocks are those overlapping the clean clip's
    loud span moved by the copy's lead-in."""
    loud = ~family.quiet(family.levels[0][i])
    if family.mixed is None:
        return family.inputs[i], loud
    emb, lead = family.mixed[0][i], family.mixed[2][i]
    p = family.params
    hop_s, block_s = p.block_hop_seconds, p.block_seconds
    idx = np.flatnonzero(loud)
    a, b = (idx[0] * hop_s, idx[-1] * hop_s + block_s) if len(idx) else (0.0, len(loud) * hop_s)
    starts = np.arange(len(emb)) * hop_s
    return emb, (starts < b + lead) & (starts + block_s > a + lead)


def heard_loud(family, i: int) -> np.ndarray:
    """Clip i's loud blocks as recorded and, when made, as heard over background (the mixed copy)."""
    emb, loud = heard(family, i)
    plain = loud_blocks(family, i)
    return np.concatenate([plain, emb[loud]]) if family.mixed is not None and loud.any() else plain


def stored_prototypes(family, data, train_idx) -> tuple[np.ndarray, np.ndarray]:
    """(float16 unit rows, label of each): the loud blocks of clips ``train_idx`` as recorded and as heard over
    background, as the bundle stores them."""
    protos = [heard_loud(family, i) for i in train_idx]
    keep = [k for k, p in enumerate(protos) if len(p)]
    rows = unit_rows(np.concatenate([protos[k] for k in keep])).astype(np.float16)
    return rows, np.concatenate([np.full(len(protos[k]), data.y[train_idx[k]]) for k in keep])


def fold_novelty(family, data, train_idx, n_labels: int) -> Novelty:
    """The novelty rule over the stored prototypes of clips ``train_idx``, no cut yet (tau -1): training computes
    the similarities the device will (runtime.model.novelty.load_novelty reads the same float16 rows)."""
    rows, labels = stored_prototypes(family, data, train_idx)
    return Novelty(prototypes=unit_rows(rows.astype(np.float32)), proto_label=labels,
                   tau=np.full(n_labels, -1.0, dtype=np.float32))


def calibrate_streams(family, data, pool: NegativePool, fold_flats: list[bytes], options) -> dict:
    """Validation streams per fold, scored by the fold's int8 model; the chosen settings and their metrics."""
    from runtime.model.interpreter import Runner

    rng = np.random.default_rng(options.seed)
    streams, raws, sims, held_sims, novelties = [], [], [], [[] for _ in data.labels], []
    for k, ((tr, va), flat) in enumerate(zip(data.splits, fold_flats)):
        targets = [(data.labels[data.y[i]], *heard(family, i)) for i in va if len(family.inputs[i])]
        events = pool.items(k, "event")
        cats = pool.item_categories(k, "event")
        # hard negatives (reviewed clips people rejected) always play: listen's defaults must answer for them
        perm = rng.permutation(len(events))
        hard = [j for j in perm if cats[j].startswith("review:")]
        pick = hard + [j for j in perm if not cats[j].startswith("review:")][:max(0, len(targets) - len(hard))]
        stream = compose_stream(k, targets, [(cats[j], events[j]) for j in pick], pool.items(k, "bed"), rng)
        novelty = fold_novelty(family, data, np.asarray(tr), data.n_labels)
        novelties.append(novelty)
        streams.append(stream)
        raws.append(Runner(flat).run(stream.emb))
        sims.append(novelty.similarity(stream.emb))
        for i in va:
            emb, loud = heard(family, i)
            if loud.any():
                held_sims[data.y[i]].append(novelty.similarity(emb[loud])[:, data.y[i]])
        log.info("validation stream %d/%d: %d targets, %d distractors, %.0f s", k + 1, len(data.splits),
                 len(targets), len(pick), stream.n_blocks * family.params.block_hop_seconds)
    held = [np.concatenate(h) if h else np.zeros(1) for h in held_sims]
    # a family whose embeddings may not be kept in the bundle (BirdNET) has no novelty rule: its prototypes would be
    # those embeddings (novelty.npz)
    offered = getattr(family, "novelty_rule", True)
    taus = {q: np.array([np.quantile(h, q) for h in held], dtype=np.float32)
            for q in NOVELTY_QUANTILES if q is not None and offered}
    tl = build_timeline(streams, raws, sims, family.params.block_hop_seconds, family.params.block_seconds)
    chosen = choose(tl, data.labels, taus, options.max_false_alarms)
    tau = taus.get(chosen["novelty_quantile"])
    guard = review_guard(family, data, fold_flats, novelties, tau, chosen)
    metrics = validate(tl, data.labels, chosen, tau)
    if guard is not None:
        chosen["fits"] = bool(metrics["false_alarms_per_hour"] <= options.max_false_alarms)
    if not chosen["fits"]:
        log.warning("no setting keeps the validation streams under %.0f false alarms per hour (best: %.0f/h); "
                    "the quietest one is used", options.max_false_alarms, metrics["false_alarms_per_hour"])
    log.info("stream defaults: %s; validation: macro event F1 %.3f, %.1f false alarms per hour, %.0f%% of distractors "
             "detected",
             {k: v for k, v in chosen.items() if k != "fits"}, metrics["macro_event_f1"],
             metrics["false_alarms_per_hour"], 100 * metrics["distractor_hit_rate"])
    return {"choice": chosen, "tau": None if tau is None else {l: round(float(t), 4) for l, t in zip(data.labels, tau)},
            "validation": metrics, "max_false_alarms_per_hour": options.max_false_alarms,
            "negatives": pool.notes, "review_recall_guard": guard, "novelty_offered": offered}


HELD_AFTER_REVIEWS = ("smoothing", "merge_gap_s")  # stream settings an update from reviews keeps at the old bundle's


def review_guard(family, data, fold_flats: list[bytes], novelties: list, tau, chosen: dict) -> dict | None:
    """``train --update --reviews``: the streams' ``chosen`` settings kept from dropping the field's true
    detections (changed in place). The confirmed reviewed clips are scored out of fold (each by the int8 model of
    the fold that held it out, on its dense blocks, after the novelty rule when one is chosen) and a label's
    threshold rises above the old bundle's only as far as they show is safe (calibrate.keep_review_recall); the
    minimum event duration, which drops events as a higher threshold does and which clips cannot bound, stays
    at most the old one. Smoothing and merge gap, which the streams re-choose for the refitted head and which
    clips cannot bound either, stay at the old bundle's (sixth design round, docs/web.md). None without an update
    from reviews."""
    from runtime.model.interpreter import Runner

    guard = getattr(family, "review_guard", None)
    if guard is None:
        return None
    peaks = []
    for k, flat in enumerate(fold_flats):
        mine = [(y, e) for y, fold, e in guard.positives if fold == k and len(e)]
        if not mine:
            continue
        runner = Runner(flat)
        for y, e in mine:
            scores = runner.run(e)
            if tau is not None:
                scores = np.where(novelties[k].similarity(e) >= tau, scores, 0.0)
            peaks.append((y, float(scores[:, y].max())))
    chosen["thresholds"], notes = keep_review_recall(chosen["thresholds"], guard.old.get("thresholds") or {},
                                                     data.labels, peaks)
    changed = {k: v["threshold"] for k, v in notes.items() if v["threshold"] != v["from_streams"]}
    if changed:
        log.info("thresholds kept nearer the old bundle's (too few confirmed reviews to raise them): %s", changed)
    old_min = guard.old.get("min_event_s")
    notes = {"thresholds": notes, "min_event_s": {"from_streams": chosen["min_event_s"], "old": old_min}}
    if old_min is not None and chosen["min_event_s"] > float(old_min):
        chosen["min_event_s"] = float(old_min)
    for key in HELD_AFTER_REVIEWS:
        if guard.old.get(key) is not None:
            notes[key] = {"from_streams": chosen[key], "old": guard.old[key]}
            chosen[key] = guard.old[key]
    return notes


def final_novelty(family, data, tau: dict) -> tuple[bytes, dict]:
    """(novelty.npz bytes, model.json 'novelty') from every clip's stored prototypes and the chosen tau."""
    import io

    from runtime.model.novelty import NOVELTY_FILE

    rows, labels = stored_prototypes(family, data, np.arange(len(data.y)))
    buf = io.BytesIO()
    np.savez_compressed(buf, prototypes=rows, proto_label=labels.astype(np.int16))
    return buf.getvalue(), {"file": NOVELTY_FILE, "tau": tau,
                            "rule": "a label's score is set to 0 when the block's largest cosine similarity to that "
                                    "label's training blocks is below its tau"}
