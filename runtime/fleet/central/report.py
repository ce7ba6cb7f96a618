"""`fieldear report`: counts from the central database by device, label or day (server-side code), from either
back end (a SQLite file or a postgresql:// URL, runtime/fleet/central/store.py); both print the same table.

By device, ``last_seen_utc`` is the time of the device's last event/health/review message and ``backlog`` the
number of its rows not yet acknowledged by the collector when it sent that message (its outbox backlog)."""

from __future__ import annotations

import logging
from pathlib import Path

from runtime.errors import FieldearError

log = logging.getLogger(__name__)

# the day of an event: its start (ISO text, or unix seconds), else the day it was received
_DAY = {
    "sqlite": "CASE WHEN typeof(start_utc) IN ('integer', 'real') THEN date(start_utc, 'unixepoch') "
              "ELSE COALESCE(date(start_utc), date(received_ts, 'unixepoch')) END",
    "postgres": "CASE WHEN start_utc ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}' THEN substr(start_utc, 1, 10) "
                "WHEN start_utc ~ '^-?[0-9]+(\\.[0-9]+)?$' "
                "THEN to_char(to_timestamp(start_utc::double precision) AT TIME ZONE 'UTC', 'YYYY-MM-DD') "
                "ELSE to_char(to_timestamp(received_ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD') END",
}
_UTC = {
    "sqlite": "strftime('%Y-%m-%dT%H:%M:%SZ', {0}, 'unixepoch')",
    "postgres": "to_char(to_timestamp(floor({0})) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
}
_ROUND = {"sqlite": "ROUND({0}, 3)", "postgres": "ROUND(({0})::numeric, 3)"}

REPORTS = {
    "device": (
        ("device", "events", "labels", "first_event_utc", "last_event_utc", "health_msgs", "status", "last_seen_utc",
         "backlog"),
        "SELECT d.device_id, COALESCE(e.n, 0), COALESCE(e.labels, 0), e.first, e.last, COALESCE(h.n, 0), s.state, "
        "CASE WHEN v.last_seen_ts IS NULL THEN NULL ELSE {utc} END, "
        "v.backlog "
        "FROM (SELECT device_id FROM events UNION SELECT device_id FROM health UNION SELECT device_id FROM status) d "
        "LEFT JOIN (SELECT device_id, COUNT(*) n, COUNT(DISTINCT label) labels, MIN(start_utc) first, "
        "MAX(start_utc) last FROM events GROUP BY device_id) e ON e.device_id = d.device_id "
        "LEFT JOIN (SELECT device_id, COUNT(*) n FROM health GROUP BY device_id) h ON h.device_id = d.device_id "
        "LEFT JOIN status s ON s.device_id = d.device_id "
        "LEFT JOIN {devices} v ON v.device_id = d.device_id ORDER BY d.device_id",
    ),
    "label": (
        ("label", "events", "devices", "mean_peak", "max_peak"),
        "SELECT label, COUNT(*), COUNT(DISTINCT device_id), {mean_peak}, {max_peak} "
        "FROM events GROUP BY label ORDER BY COUNT(*) DESC, label IS NOT NULL, label",
    ),
    "day": (
        ("day", "events", "devices", "labels"),
        "SELECT {day} AS day, COUNT(*), COUNT(DISTINCT device_id), COUNT(DISTINCT label) "
        "FROM events GROUP BY 1 ORDER BY 1",
    ),
}


def report_sql(by: str, dialect: str, has_devices: bool = True) -> str:
    if by not in REPORTS:
        raise FieldearError(f"cannot report by {by!r}", hint=f"use one of: {', '.join(REPORTS)}")
    devices = "devices" if has_devices else "(SELECT NULL AS device_id, NULL AS last_seen_ts, NULL AS backlog WHERE 0)"
    return REPORTS[by][1].format(
        utc=_UTC[dialect].format("v.last_seen_ts"), devices=devices, day=_DAY[dialect],
        mean_peak=_ROUND[dialect].format("AVG(peak)"), max_peak=_ROUND[dialect].format("MAX(peak)"),
    )


def report_rows(db: str | Path, by: str) -> tuple[tuple[str, ...], list[tuple]]:
    """(header, rows) of the report ``by`` device/label/day from ``db`` (SQLite path or postgresql:// URL)."""
    from runtime.fleet.central.store import open_store

    if by not in REPORTS:
        raise FieldearError(f"cannot report by {by!r}", hint=f"use one of: {', '.join(REPORTS)}")
    with open_store(db, readonly=True) as store:
        return REPORTS[by][0], store.report(by)


def format_table(header: tuple[str, ...], rows: list[tuple]) -> str:
    cells = [list(header)] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
