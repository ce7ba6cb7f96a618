"""Experiment, not part of `make bench`: does fine-tuning the backbone's last conv layer help on ESC-10?

    make experiment-finetune                 # = .venv/bin/python -m tests.experiments.exp_finetune [--out bench/results]

The question is whether the idea helps at all, before any int8 or bundle work, so it runs in float on
PyTorch's original network, on the 5 official ESC-10 folds:

1. torch step (the torch venv): every clip's log-mel (the runtime frontend), zero-padded to the longest
   clip's (7.2 s), cut into blocks at every 10th frame. aisfx is run frozen up to block 4's first conv. Per held-out fold, block 4's second conv
   (its batch-norm folded in) and a linear layer are trained on the other four folds' blocks (AdamW: conv
   lr 1e-4, linear 3e-3, weight decay 1e-2, label smoothing 0.1, dropout 0.3, 4 epochs, batch 32; blocks
   20 dB or more below their clip's loudest left out). Every clip's embeddings through the tuned layer
   are saved, and once through the untouched layer.
2. heads step (this venv): fieldear's own heads (``BackboneFamily.specs``, its quiet-block rule) are
   fitted per fold on either set, on the blocks at the bundle's hop ("hop") or at every 10th frame
   ("offsets"), and scored on the held-out fold's blocks at the bundle's hop, mean- and max-pooled.

``frozen`` vs ``tuned`` is the comparison; both go through the same float path, so the numbers are lower
than the int8 pipeline's (which adds level-shifted copies). Writes finetune.json into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.bench.bench_backbone import TORCH_PYTHON
from tests.bench.bench_train import ROOT, SHARED, _fold

log = logging.getLogger("bench.finetune")

OFFSET_STEP = 10  # frames between the training blocks' starts
EPOCHS = 4
BATCH = 32
SEED = 0


def esc10_clips() -> tuple[list[Path], np.ndarray, np.ndarray, list[str]]:
    """(paths, label index, official fold, labels) of every ESC-10 clip, in a fixed order."""
    files = sorted((SHARED / "esc10").glob("*/*.wav"))
    if not files:
        raise SystemExit(f"no ESC-10 clips under {SHARED / 'esc10'}")
    labels = sorted({f.parent.name for f in files})
    y = np.array([labels.index(f.parent.name) for f in files])
    fold = np.array([int(_fold(f)) for f in files])
    return files, y, fold, labels


def clip_frames(path: Path) -> np.ndarray:
    """A clip's log-mel frames at the backbone's rate, zero-padded to at least one block."""
    from runtime.audio.files import read_audio
    from runtime.audio.resample import resample
    from runtime.features import frontend as fe

    p = fe.BACKBONE
    x, rate = read_audio(path)
    m = fe.logmel(resample(x, rate, p.sample_rate), p)
    return np.pad(m, ((0, max(0, p.block_frames - len(m))), (0, 0)))


def offsets(n_frames: int) -> list[int]:
    from runtime.features.frontend import BACKBONE

    return list(range(0, n_frames - BACKBONE.block_frames + 1, OFFSET_STEP))


# ---------------------------------------------------------------- step 1: torch venv


def step_torch(work: Path) -> None:
    import torch
    import torch.nn.functional as F

    from convert.families.backbone import QUIET_DB
    from convert.families.embed import block_levels_db
    from convert.tools.backbone_port import load_torch_net
    from runtime.features.frontend import BACKBONE

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    net, _weights, _ckpt = load_torch_net()
    files, y, fold, labels = esc10_clips()
    t0 = time.monotonic()
    frames = [clip_frames(f) for f in files]
    n_frames = np.array([len(m) for m in frames])  # before the padding: each clip's own blocks, for step 2
    longest = max(len(m) for m in frames)  # clips are 3.6-7.2 s: all zero-padded to the longest here
    frames = [np.pad(m, ((0, longest - len(m)), (0, 0))) for m in frames]
    n_off = len(offsets(longest))
    blocks = np.stack([[m[o:o + BACKBONE.block_frames] for o in offsets(longest)] for m in frames])
    levels = np.stack([block_levels_db(b, BACKBONE) for b in blocks])
    b4 = net.conv_block4
    with torch.no_grad():
        feats = []
        for clip in torch.from_numpy(blocks):
            x = clip.unsqueeze(1)
            for blk in (net.conv_block1, net.conv_block2, net.conv_block3):
                x = blk(x, pool_size=(2, 2), pool_type="max")
            feats.append(F.relu(b4.bn1(b4.conv1(x))).half())
        feats = torch.stack(feats)  # (clips, offsets, 512, 12, 12)
        scale = b4.bn2.weight / torch.sqrt(b4.bn2.running_var + b4.bn2.eps)
        w0 = b4.conv2.weight * scale[:, None, None, None]
        b0 = b4.bn2.bias - b4.bn2.running_mean * scale
    log.info("frozen features of %d clips x %d blocks (%.0f s)", len(files), n_off, time.monotonic() - t0)

    def embed(x, w, b):
        return F.relu(F.conv2d(x.float(), w, b, padding=1)).mean(dim=3).amax(dim=2)

    def all_embeddings(w, b):
        with torch.no_grad():
            return np.stack([embed(feats[c], w, b).numpy() for c in range(len(files))])

    out = {"frozen": all_embeddings(w0, b0)}
    for k in sorted(set(fold.tolist())):
        t1 = time.monotonic()
        w = torch.nn.Parameter(w0.clone())
        b = torch.nn.Parameter(b0.clone())
        linear = torch.nn.Linear(w0.shape[0], len(labels))
        drop = torch.nn.Dropout(0.3)
        opt = torch.optim.AdamW([{"params": [w, b], "lr": 1e-4}, {"params": linear.parameters(), "lr": 3e-3}],
                                weight_decay=1e-2)
        train = [(c, o) for c in np.flatnonzero(fold != k) for o in range(n_off)
                 if levels[c, o] >= levels[c].max() - QUIET_DB]  # BackboneFamily.quiet's rule
        for _epoch in range(EPOCHS):
            order = rng.permutation(len(train))
            for i in range(0, len(order), BATCH):
                sel = [train[j] for j in order[i:i + BATCH]]
                x = torch.stack([feats[c, o] for c, o in sel])
                target = torch.from_numpy(y[[c for c, _ in sel]])
                loss = F.cross_entropy(linear(drop(embed(x, w, b))), target, label_smoothing=0.1)
                opt.zero_grad()
                loss.backward()
                opt.step()
        out[f"tuned_{k}"] = all_embeddings(w.detach(), b.detach())
        log.info("fold %d: last conv tuned on %d blocks (%.0f s)", k, len(train), time.monotonic() - t1)
    np.savez(work / "finetune_embeddings.npz", levels=levels, n_frames=n_frames, **out)


# ---------------------------------------------------------------- step 2: this venv


def step_heads(work: Path) -> dict:
    from convert.families.backbone import BackboneFamily
    from convert.families.heads import fit_head
    from convert.options import TrainOptions
    from runtime.features.frontend import BACKBONE, block_starts
    from runtime.model.model import pool_scores

    files, y, fold, labels = esc10_clips()
    z = np.load(work / "finetune_embeddings.npz")
    levels = z["levels"]
    # each clip's own blocks (the torch step padded every clip to the longest): at the bundle's hop, as the
    # device cuts them, and at every OFFSET_STEP frames
    n_frames = z["n_frames"].tolist()
    hop = [[o // OFFSET_STEP for o in block_starts(n, BACKBONE)] for n in n_frames]
    every = [list(range(len(offsets(n)))) for n in n_frames]
    family = BackboneFamily(TrainOptions(data=work, out=work / "unused"))
    results = {}
    for kind in ("frozen", "tuned"):
        for train_blocks, cols in (("hop", hop), ("offsets", every)):
            for spec in family.specs:
                accs = {"mean": [], "max": []}
                for k in sorted(set(fold.tolist())):
                    emb = z["frozen"] if kind == "frozen" else z[f"tuned_{k}"]
                    family.inputs = [e[c] for e, c in zip(emb, cols)]
                    family.augmented, family.levels = [], [[lv[c] for lv, c in zip(levels, cols)]]
                    x, yy, w = family.training_set(np.flatnonzero(fold != k), y, len(labels))
                    head = fit_head(x, yy, len(labels), spec, SEED, sample_weight=w)
                    held = np.flatnonzero(fold == k)
                    for pooling in accs:
                        s = np.stack([pool_scores(head.predict_proba(emb[c][hop[c]]), pooling, len(labels)) for c in held])
                        accs[pooling].append(float((s.argmax(1) == y[held]).mean()))
                for pooling, a in accs.items():
                    name = f"{kind}/{train_blocks}/{spec.name}/{pooling}"
                    results[name] = {"folds": [round(v, 4) for v in a], "mean": round(float(np.mean(a)), 4)}
                    log.info("%-40s mean %.3f  folds %s", name, np.mean(a), " ".join(f"{v:.3f}" for v in a))
    return {"what": __doc__.split("\n\n")[0], "n_clips": len(files), "results": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.experiments.exp_finetune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--step", choices=("all", "torch", "heads"), default="all")
    ap.add_argument("--torch-python", type=Path, default=TORCH_PYTHON)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="finetune: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "torch":
        step_torch(args.out)
        return 0
    if args.step == "all":
        subprocess.run([str(args.torch_python), "-m", "tests.experiments.exp_finetune", "--step", "torch",
                        "--out", str(args.out)], cwd=ROOT, check=True)
    result = step_heads(args.out)
    (args.out / "finetune.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.out / "finetune.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
