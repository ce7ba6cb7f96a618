"""Writing reviews: a person's verdict on one event (confirm, reject, relabel), one insert-only row each.

The ``reviews`` table (schema in ``runtime/store/schema.py``) is the record of the field review loop: the
web page (`fieldear serve`), the CLI (`fieldear review`) and scripts write here, the outbox sends each row to
the collector, and training reads the latest verdict per event (``runtime.store.queries.reviewed_clips``).
A review is never updated: reviewing an event again adds a row, and the newest row is its verdict.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Callable

from runtime.errors import FieldearError
from runtime.store.schema import REVIEW_COLUMNS, utc_iso

log = logging.getLogger(__name__)

VERDICTS = ("confirm", "reject", "relabel")
BACKGROUND = "background"  # what a rejected clip is: none of the model's labels
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_REVIEWER_RE = re.compile(r"^[^\x00-\x1f]{1,64}$")


@dataclass(frozen=True)
class Review:
    """One verdict: ``label`` only with ``relabel`` (another label, or "background")."""

    event_id: int
    verdict: str
    reviewer: str
    label: str | None = None

    def checked(self) -> "Review":
        if self.verdict not in VERDICTS:
            raise FieldearError(f"unknown verdict {self.verdict!r}", f"use one of {', '.join(VERDICTS)}")
        if self.verdict == "relabel" and not self.label:
            raise FieldearError("relabel needs the new label", f"e.g. `relabel dog` or `relabel {BACKGROUND}`")
        if self.verdict != "relabel" and self.label:
            raise FieldearError(f"{self.verdict} takes no label (got {self.label!r})", "only relabel names a label")
        if self.label and not _LABEL_RE.match(self.label):
            raise FieldearError(f"invalid label {self.label!r}", "letters, digits and _ . + -, at most 64")
        if not _REVIEWER_RE.match(self.reviewer or ""):
            raise FieldearError(f"invalid reviewer name {self.reviewer!r}", "give --by NAME (1 to 64 characters)")
        return self


def add_review(conn: sqlite3.Connection, review: Review, clock: Callable[[], float] = time.time) -> dict:
    """Insert one review of an existing event and commit; returns the row (with its id)."""
    review = review.checked()
    event = conn.execute("SELECT label, device_id FROM events WHERE id = ?", (int(review.event_id),)).fetchone()
    if event is None:
        raise FieldearError(f"no event {review.event_id} in the log", "list events with `fieldear events`")
    label = {"confirm": event[0], "reject": BACKGROUND}.get(review.verdict, review.label)
    row = {"event_id": int(review.event_id), "verdict": review.verdict, "label": label,
           "t_utc": utc_iso(clock()), "reviewer": review.reviewer, "device_id": event[1]}
    cols = [c for c in REVIEW_COLUMNS if c != "id"]
    try:
        with conn:
            cur = conn.execute(f"INSERT INTO reviews({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                               [row[c] for c in cols])
    except sqlite3.Error as exc:
        raise FieldearError(f"cannot write the review: {exc}", "check the log is writable and the disk not full") from None
    log.info("event %d reviewed by %s: %s (%s)", review.event_id, review.reviewer, review.verdict, label)
    return {"id": cur.lastrowid, **row}
