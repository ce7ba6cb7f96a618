"""The live page's data: `fieldear status` (running?, heartbeat, overruns, disk, temperature) plus the block
rate between the last two heartbeats, the newest events and the audio level of the newest saved clip."""

from __future__ import annotations

import logging

from runtime.store.schema import parse_utc

log = logging.getLogger(__name__)


def blocks_per_s(beats: list[dict]) -> float | None:
    """Blocks per second between the last two heartbeats of the same process (None without two)."""
    if len(beats) < 2:
        return None
    a, b = beats[-2], beats[-1]
    if a.get("pid") != b.get("pid"):
        return None
    dt = parse_utc(b["t_utc"]) - parse_utc(a["t_utc"])
    if dt <= 0:
        return None
    return round((int(b.get("blocks", 0)) - int(a.get("blocks", 0))) / dt, 2)


def live_status(settings, conn, now: float, state=...) -> dict:
    """A JSON-able dict for ``/api/status`` and the live page (``state``: the systemd state, injected in tests)."""
    from runtime.field.status import collect_status
    from runtime.store.queries import EventFilter, health_history, reviewed_events
    from runtime.web.media import event_clip, level_dbfs

    kwargs = {} if state is ... else {"state": state}
    out = collect_status(settings.db, now=now, service=settings.service, every_s=settings.every_s, **kwargs)
    beats = health_history(conn, limit=2)
    beat = out.get("heartbeat") or {}
    out["blocks_per_s"] = blocks_per_s(beats)
    if out["blocks_per_s"] is None and beat.get("uptime_s"):
        out["blocks_per_s"] = round(int(beat.get("blocks", 0)) / float(beat["uptime_s"]), 2)
    out["overruns"] = beat.get("overruns")
    out["silent_s"] = beat.get("silent_s")
    out["clipped_samples"] = beat.get("clipped_samples")
    events = reviewed_events(conn, EventFilter(limit=10))
    out["last_events"] = [{k: e[k] for k in ("id", "label", "start_utc", "peak", "verdict")} for e in events]
    out["level"] = None
    for e in events:
        clip = event_clip(settings.db, settings.clips_dir, e["clip_path"])
        if clip is not None:
            level = level_dbfs(clip)
            if level is not None:
                out["level"] = {**level, "event_id": e["id"], "start_utc": e["start_utc"]}
                break
    return out
