"""Clip prediction: a file streamed from disk -> blocks -> block scores -> pooled clip scores.

The file is read in chunks (``runtime.audio.iter_chunks``) and pushed through
``runtime.features.pipeline.BlockStream``, so memory stays bounded whatever the file's length; only the block
scores (n_labels floats per block hop) are kept. A clip shorter than one block gives one zero-padded
block (the pipeline does that).

Each block is scored twice over (``Model.score_block_both``): the classifier's raw scores, pooled into
``ClipPrediction.scores`` (the label, top-k and accuracy), and the same after the bundle's novelty rule,
pooled into ``known_scores``. A clip is ``unknown`` (``is_unknown``) when no label's known score reaches
that label's clip threshold: it is unlike every label, or scores below every label's threshold.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from runtime.errors import AudioError
from runtime.evaluate.clip_eval import UNKNOWN
from runtime.features.pipeline import FileBlocks

log = logging.getLogger(__name__)

# Audio read per chunk. Larger chunks amortise per-call overhead; memory stays a few MB at 192 kHz.
CHUNK_SECONDS = 10.0
# A progress line (INFO) this often while one long file is being scored.
PROGRESS_EVERY_S = 30.0
# A label without a clip threshold in the bundle (Bundle.threshold's default).
DEFAULT_THRESHOLD = 0.5


def is_unknown(known_scores, labels: list[str], thresholds: dict[str, float]) -> bool:
    """True when no label's (known) clip score reaches that label's threshold (a label without one: 0.5)."""
    return not any(float(s) >= float(thresholds.get(lab, DEFAULT_THRESHOLD)) for lab, s in zip(labels, known_scores))


@dataclass
class ClipPrediction:
    """Pooled scores of one file, plus what is needed to report them."""

    path: str
    labels: list[str]
    scores: np.ndarray  # (n_labels,) clip scores (the classifier's, pooled)
    duration_s: float  # audio seconds read from the file
    n_blocks: int
    sample_rate: int
    block_scores: np.ndarray | None = field(default=None, repr=False)  # (n_blocks, n_labels) if kept
    known_scores: np.ndarray | None = None  # (n_labels,) pooled after the novelty rule (None: equal to scores)
    known_block_scores: np.ndarray | None = field(default=None, repr=False)  # (n_blocks, n_labels) after the rule, if kept
    thresholds: dict[str, float] = field(default_factory=dict)  # the bundle's clip thresholds

    @property
    def label(self) -> str:
        return self.labels[int(np.argmax(self.scores))]

    @property
    def unknown(self) -> bool:
        """No label's known score reaches its clip threshold (see ``is_unknown``)."""
        known = self.scores if self.known_scores is None else self.known_scores
        return is_unknown(known, self.labels, self.thresholds)

    def shown_label(self, unknown: bool = False) -> str:
        """The label to show: ``unknown`` for an unknown clip when asked to (``--unknown``), else ``label``."""
        return UNKNOWN if unknown and self.unknown else self.label

    @property
    def score(self) -> float:
        return float(np.max(self.scores))

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k best (label, score) pairs, best first (ties in label order)."""
        order = np.argsort(-self.scores, kind="stable")[: max(1, int(k))]
        return [(self.labels[i], float(self.scores[i])) for i in order]

    def to_dict(self, top_k: int, model_sha: str | None = None, unknown: bool = False) -> dict:
        """JSON of the prediction; "unknown" is true only with ``unknown`` (then "label" is ``unknown``)."""
        out = {
            "path": self.path,
            "label": self.shown_label(unknown),
            "unknown": bool(unknown and self.unknown),
            "score": round(self.score, 6),
            "top": [{"label": lab, "score": round(s, 6)} for lab, s in self.top(top_k)],
            "scores": {lab: round(float(s), 6) for lab, s in zip(self.labels, self.scores)},
            "duration_s": round(self.duration_s, 3),
            "n_blocks": self.n_blocks,
            "sample_rate": self.sample_rate,
        }
        if model_sha:
            out["model_sha"] = model_sha
        return out


def predict_file(model, path: str | os.PathLike, keep_blocks: bool = False,
                 chunk_seconds: float = CHUNK_SECONDS, clock=time.monotonic) -> ClipPrediction:
    """Score one audio file with a loaded ``runtime.model.Model``.

    Raises AudioError (a FieldearError) for files that cannot be read; the message is short and does
    not repeat the path (callers print ``path: message``).
    """
    blocks = FileBlocks(path, model.params, chunk_seconds)
    info, stream = blocks.info, blocks.stream
    scores: list[np.ndarray] = []
    gated: list[np.ndarray] = []
    next_report = clock() + PROGRESS_EVERY_S
    for block in blocks:
        raw, known = model.score_block_both(block.features)
        scores.append(raw)
        gated.append(known)
        if clock() >= next_report:  # a long recording: say how far it got
            log.info("%s: %.0f of %.0f s done", path, stream.seconds_in, info.duration_s)
            next_report = clock() + PROGRESS_EVERY_S
    if stream.samples_in == 0:
        raise AudioError("no audio samples in the file")
    block_scores = np.stack(scores) if scores else np.zeros((0, len(model.labels)), np.float32)
    clip = model.pool(block_scores)
    known = model.pool(np.stack(gated)) if gated else clip
    if not (np.all(np.isfinite(clip)) and np.all(np.isfinite(known))):  # cannot happen with finite input; never report NaN as a score
        raise AudioError("model produced non-finite scores")
    log.debug("%s: %.2f s at %d Hz, %d blocks", path, stream.seconds_in, info.sample_rate, len(scores))
    return ClipPrediction(
        path=str(path), labels=list(model.labels), scores=np.asarray(clip, dtype=np.float32),
        duration_s=stream.seconds_in, n_blocks=len(scores), sample_rate=info.sample_rate,
        block_scores=block_scores if keep_blocks else None, known_scores=np.asarray(known, dtype=np.float32),
        known_block_scores=(np.stack(gated) if gated else block_scores) if keep_blocks else None,
        thresholds=dict(model.bundle.thresholds),
    )


def short_error(exc: BaseException, with_hint: bool = False) -> str:
    """One line describing a per-file failure (FieldearError text, or the exception type and text)."""
    from runtime.errors import FieldearError

    if isinstance(exc, FieldearError):
        text = str(exc) if with_hint else exc.message
    else:
        text = f"{type(exc).__name__}: {exc}"
    line = " ".join(str(text).split())
    return line[:300] if line else type(exc).__name__


def format_prediction(pred: ClipPrediction, top_k: int, unknown: bool = False) -> str:
    """Human-readable one-liner: ``path  label 0.912  other 0.051  (5.00 s, 3 blocks)``; with ``unknown``
    an unknown clip reads ``path  unknown  label 0.312  other 0.051  (...)`` (the raw scores follow)."""
    tops = "  ".join(f"{lab} {s:.3f}" for lab, s in pred.top(top_k))
    if unknown and pred.unknown:
        tops = f"{UNKNOWN}  {tops}"
    return f"{pred.path}  {tops}  ({pred.duration_s:.2f} s, {pred.n_blocks} block{'s' if pred.n_blocks != 1 else ''})"
