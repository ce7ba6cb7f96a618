"""Clips heard through the field: each training clip mixed over a background recording at a random
signal-to-noise ratio, embedded by the device's own frontend and the family's backbone (aisfx int8, or BirdNET).

The mixed copy of a clip is one more training copy (next to the level-shifted ones) and is what the
validation streams play for that clip when it is held out: in the field a sound arrives over the site's
background, not over the silence of a curated clip, and at any moment, not at the start of a block: each
mix starts the clip after a random lead-in of background (up to one block hop), so a short sound falls
anywhere in its blocks. Beds: the user's ``--background`` recordings if any,
else the built-in bed recordings shipped in ``convert/data/negative_set/beds`` (forest soundscapes,
BSD-3-Clause, see ATTRIBUTION.md there). The SNR (the clip's loud part against the bed, RMS) is drawn
uniformly from ``SNR_DB``, a wide range fixed in advance; everything is seeded and cached.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from runtime.model.bundle import sha256_file

log = logging.getLogger(__name__)

SNR_DB = (0.0, 20.0)
BEDS_DIR = Path(__file__).resolve().parents[1] / "data" / "negative_set" / "beds"


def builtin_beds() -> list[Path]:
    return sorted(BEDS_DIR.glob("*.wav"))


def mix(clip: np.ndarray, bed: np.ndarray, snr_db: float, start: int) -> np.ndarray:
    """``clip`` over ``bed`` (cycled from ``start``) with the clip's loud part ``snr_db`` above the bed (RMS);
    clipped to [-1, 1]. A silent clip or bed is returned as the clip."""
    seg = np.take(bed, np.arange(start, start + len(clip)) % len(bed))
    frame = max(1, len(clip) // 50)
    energy = np.array([np.mean(clip[i:i + frame] ** 2) for i in range(0, len(clip), frame)])
    loud = energy[energy >= energy.max() * 0.01] if energy.max() > 0 else energy
    clip_rms, bed_rms = float(np.sqrt(np.mean(loud))), float(np.sqrt(np.mean(seg ** 2)))
    if clip_rms <= 0 or bed_rms <= 0:
        return clip.astype(np.float32)
    gain = clip_rms / (bed_rms * 10 ** (snr_db / 20))
    return np.clip(clip + gain * seg, -1.0, 1.0).astype(np.float32)


def mixed_embeddings(clips, bed_paths: list[Path], embed_blocks, embedding_key: str, params, seed: int,
                     cache_dir=None) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """(embeddings, block levels, lead-in seconds) of every clip mixed over a bed; the bed, its offset, the SNR and
    the lead-in are drawn per clip from ``seed`` and the clip's sha (the same clip gets the same mix in every run).
    ``embed_blocks``: the family's embedding of blocks (``params``'s), cached under ``embedding_key``."""
    from convert.families.embed import EmbeddingCache, block_levels_db
    from runtime.audio.files import read_audio
    from runtime.features.pipeline import blocks_of, stack

    bed_shas = [sha256_file(p) for p in bed_paths]
    backbone_sha = embedding_key
    beds: dict[int, np.ndarray] = {}
    embs, levels, leads, hits = [], [], [], 0
    t0 = time.monotonic()
    for clip in clips:
        h = hashlib.sha256(f"{seed}|{clip.sha}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(h[:8], "little"))
        b = int(rng.integers(len(bed_paths)))
        snr = float(rng.uniform(*SNR_DB))
        u = float(rng.random())
        lead = int(rng.integers(params.block_hop * params.hop))  # samples of background before the clip
        kind = f"mix|{bed_shas[b]}|{snr:.6f}|{u:.6f}|{lead}"
        cache = EmbeddingCache(cache_dir, params, backbone_sha, kind=kind)
        level_cache = EmbeddingCache(cache_dir, params, backbone_sha, kind=kind + "|levels")
        emb, lv = cache.get(clip.sha), level_cache.get(clip.sha)
        if emb is None or lv is None or len(lv) != len(emb):
            if b not in beds:
                beds[b] = read_audio(bed_paths[b], target_rate=params.sample_rate)[0]
            x = read_audio(clip.path, target_rate=params.sample_rate)[0]
            x = np.concatenate([np.zeros(lead, dtype=np.float32), x])
            mixed = mix(x, beds[b], snr, int(u * len(beds[b])))
            blocks = stack(blocks_of(mixed, params.sample_rate, params), params)
            emb = embed_blocks(blocks)
            lv = block_levels_db(blocks, params)
            cache.put(clip.sha, emb)
            level_cache.put(clip.sha, lv)
        else:
            hits += 1
        embs.append(emb)
        levels.append(lv)
        leads.append(lead / params.sample_rate)
    log.info("embeddings (mixed over %d background recording(s), SNR %g-%g dB): %d clips, %d from cache (%.1f s)",
             len(bed_paths), *SNR_DB, len(clips), hits, time.monotonic() - t0)
    return embs, levels, leads
