"""`fieldear report`: counts from the central database by device, label or day (server-side code).

By device, ``last_seen_utc`` is the time of the device's last event/health/review message and ``backlog`` the
number of its rows not yet acknowledged by the collector when it sent that message (its outbox backlog)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from runtime.errors import FieldearError

log = logging.getLogger(__name__)


_DAY = (
    "CASE WHEN typeof(start_utc) IN ('integer', 'real') THEN date(start_utc, 'unixepoch') "
    "ELSE COALESCE(date(start_utc), date(received_ts, 'unixepoch')) END"
)

REPORTS = {
    "device": (
        ("device", "events", "labels", "first_event_utc", "last_event_utc", "health_msgs", "status", "last_seen_utc",
         "backlog"),
        "SELECT d.device_id, COALESCE(e.n, 0), COALESCE(e.labels, 0), e.first, e.last, COALESCE(h.n, 0), s.state, "
        "CASE WHEN v.last_seen_ts IS NULL THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%SZ', v.last_seen_ts, 'unixepoch') END, "
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
        "SELECT label, COUNT(*), COUNT(DISTINCT device_id), ROUND(AVG(peak), 3), ROUND(MAX(peak), 3) "
        "FROM events GROUP BY label ORDER BY COUNT(*) DESC, label",
    ),
    "day": (
        ("day", "events", "devices", "labels"),
        f"SELECT {_DAY} AS day, COUNT(*), COUNT(DISTINCT device_id), COUNT(DISTINCT label) "
        "FROM events GROUP BY day ORDER BY day",
    ),
}


def report_rows(db_path: str | Path, by: str) -> tuple[tuple[str, ...], list[tuple]]:
    if by not in REPORTS:
        raise FieldearError(f"cannot report by {by!r}", hint=f"use one of: {', '.join(REPORTS)}")
    path = Path(db_path)
    if not path.exists():
        raise FieldearError(f"no central database at {path}", hint="run `fieldear collect --db PATH` first")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        header, sql = REPORTS[by]
        has_devices = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'devices'").fetchone() is not None
        # (a central file not yet opened by this version's `collect` has no devices table)
        sql = sql.replace("{devices}", "devices" if has_devices else
                          "(SELECT NULL AS device_id, NULL AS last_seen_ts, NULL AS backlog WHERE 0)")
        try:
            rows = conn.execute(sql).fetchall()
        except sqlite3.DatabaseError as exc:
            raise FieldearError(f"{path} is not a fieldear central database ({exc})") from None
        return header, rows
    finally:
        conn.close()


def format_table(header: tuple[str, ...], rows: list[tuple]) -> str:
    cells = [list(header)] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
