"""Ground-truth annotations: CSV (``start_s,end_s,label``), Audacity label tracks, Raven selection tables.

- CSV: a header with ``start_s``, ``end_s`` and ``label`` (also accepted: ``onset``/``offset``/``event_label``,
  ``start``/``end``); extra columns are ignored.
- Audacity: ``start<TAB>end<TAB>label`` per line, no header; lines starting with ``\\`` (spectral selection
  frequencies) are skipped.
- Raven: tab-separated with a header holding ``Begin Time (s)`` and ``End Time (s)``; the label comes from the
  first of ``Annotation``, ``Label``, ``Species``, ``Class``, ``Common Name``; a selection listed once per view
  (Waveform and Spectrogram) is counted once.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import FieldearError

CSV_ALIASES = {"start_s": ("start_s", "onset", "start", "begin"), "end_s": ("end_s", "offset", "end", "stop"),
               "label": ("label", "event_label", "class")}
RAVEN_LABELS = ("Annotation", "Label", "Species", "Class", "Common Name", "label")


@dataclass(frozen=True)
class Annotation:
    start_s: float
    end_s: float
    label: str


def _bad(path, line_no, why) -> FieldearError:
    return FieldearError(f"{path}:{line_no}: {why}",
                         "annotations are CSV start_s,end_s,label, an Audacity label track or a Raven selection table")


def _make(path, line_no, start, end, label) -> Annotation:
    try:
        a, b = float(start), float(end)
    except (TypeError, ValueError):
        raise _bad(path, line_no, f"start/end are not numbers: {start!r}, {end!r}") from None
    label = (label or "").strip()
    if not label:
        raise _bad(path, line_no, "empty label")
    if b < a or a < 0:
        raise _bad(path, line_no, f"end {b} before start {a} (or negative start)")
    return Annotation(a, b, label)


def parse_annotations(text: str, path: str = "<annotations>") -> list[Annotation]:
    lines = [l for l in text.splitlines() if l.strip()]
    if not lines:
        return []
    first = lines[0]
    if "\t" in first and "Begin Time (s)" in first:
        return _raven(lines, path)
    if "\t" in first:
        return _audacity(lines, path)
    return _csv(text, path)


def _csv(text: str, path: str) -> list[Annotation]:
    reader = csv.DictReader(io.StringIO(text))
    fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
    cols = {}
    for key, aliases in CSV_ALIASES.items():
        found = next((fields[a] for a in aliases if a in fields), None)
        if found is None:
            raise _bad(path, 1, f"CSV header needs start_s,end_s,label (got {', '.join(reader.fieldnames or [])})")
        cols[key] = found
    return [_make(path, i, row[cols["start_s"]], row[cols["end_s"]], row[cols["label"]])
            for i, row in enumerate(reader, start=2)]


def _audacity(lines, path: str) -> list[Annotation]:
    out = []
    for i, line in enumerate(lines, start=1):
        if line.startswith("\\"):
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise _bad(path, i, "Audacity label lines are start<TAB>end<TAB>label")
        out.append(_make(path, i, parts[0], parts[1], parts[2]))
    return out


def _raven(lines, path: str) -> list[Annotation]:
    header = [h.strip() for h in lines[0].split("\t")]
    idx = {h: i for i, h in enumerate(header)}
    label_col = next((c for c in RAVEN_LABELS if c in idx), None)
    if label_col is None:
        raise _bad(path, 1, f"Raven table has no label column (one of {', '.join(RAVEN_LABELS)})")
    seen = set()
    out = []
    for i, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        if len(parts) < len(header):
            parts += [""] * (len(header) - len(parts))
        sel = parts[idx["Selection"]] if "Selection" in idx else str(i)
        if sel in seen:
            continue
        seen.add(sel)
        out.append(_make(path, i, parts[idx["Begin Time (s)"]], parts[idx["End Time (s)"]], parts[idx[label_col]]))
    return out


def load_annotations(path) -> list[Annotation]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FieldearError(f"annotations file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FieldearError(f"cannot read annotations {p}: {exc}") from None
    return sorted(parse_annotations(text, str(p)), key=lambda a: (a.start_s, a.label))
