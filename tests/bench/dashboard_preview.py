"""A preview of the fleet dashboard's panel *data* (firmware_tools/grafana/fieldear-fleet.json), drawn with
matplotlib into one PNG in the dashboard's grid layout. Not a Grafana screenshot (Grafana is not installable
here): each SQL panel's query runs against a central PostgreSQL database (its macros expanded for the run's
time range), and each PromQL panel shows the metric(s) it names, read from a series of the collector's
``/metrics`` scrapes, with only the steps the panel's expression applies to them: ``time() - m``, ``count(...)``
(label sets per scrape), and ``rate``/``increase`` as the difference of successive scrapes. The load bench
(tests/bench/bench_fleet_load.py) draws it at the end of its 200-device run.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from tests.fleet.dashboard import dashboard, expand_macros, promql_names

log = logging.getLogger("dashboard_preview")

NOTE = ("Preview of the panels' data, NOT a Grafana screenshot: SQL panels run on the load run's central "
        "PostgreSQL; PromQL panels show their metric from the collector's /metrics scrapes")
MAX_TABLE_ROWS = 8


def load_scrapes(path: Path) -> list[tuple[float, dict[tuple[str, tuple], float]]]:
    """The scrapes written by the load bench: one JSON line each, ``[t, [[name, {labels}, value], ...]]``."""
    out = []
    for line in Path(path).read_text().splitlines():
        t, samples = json.loads(line)
        out.append((t, {(n, tuple(sorted(lab.items()))): v for n, lab, v in samples}))
    return out


def promql_series(expr: str, scrapes: list) -> dict[str, tuple[list[float], list[float]]]:
    """{series label: (times, values)} of the metric(s) ``expr`` names, with the panel's steps applied."""
    names, _labels = promql_names(expr)
    by = re.search(r"\bsum\s+by\s*\(([^)]*)\)", expr)
    keep = [w.strip() for w in by.group(1).split(",")] if by else None
    series: dict[str, dict[float, float]] = {}
    for t, samples in scrapes:
        for (name, labels), value in samples.items():
            if name not in names:
                continue
            lab = dict(labels)
            if keep is not None:
                lab = {k: lab.get(k, "") for k in keep}
            key = ",".join(f"{v}" for v in lab.values()) or name
            if "time()" in expr:
                value = t - value
            row = series.setdefault(key, {})
            row[t] = row.get(t, 0.0) + value if keep is not None else value
    if expr.lstrip().startswith("count("):
        times = [t for t, _ in scrapes]
        return {"count": (times, [sum(1 for s in series.values() if t in s) for t in times])}
    out = {}
    for key, points in series.items():
        ts = sorted(points)
        vs = [points[t] for t in ts]
        if re.search(r"\b(rate|increase)\(", expr):
            scale = 60.0 if "* 60" in expr else 1.0
            pairs = list(zip(ts, vs))
            if "rate(" in expr:
                vs = [(b - a) / (tb - ta) * scale for (ta, a), (tb, b) in zip(pairs, pairs[1:])]
            else:
                vs = [b - pairs[0][1] for _, b in pairs[1:]]
            ts = ts[1:]
        out[key] = (ts, vs)
    return out


def _cell(v) -> str:
    text = v.strftime("%H:%M:%S") if hasattr(v, "strftime") else (f"{v:.3g}" if isinstance(v, float) else str(v))
    return text if len(text) <= 28 else text[:25] + "..."


def render(db_url: str, scrapes_path: Path, out_png: Path, t_from: float, t_to: float, subtitle: str = "") -> Path:
    """Draw every panel into ``out_png``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.fleet.central.store import open_store

    scrapes = load_scrapes(scrapes_path)
    t0 = scrapes[0][0] if scrapes else t_from
    dash = dashboard()
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
    fig = plt.figure(figsize=(24, rows * 0.45 + 1.2))
    fig.suptitle(f"{dash['title']} - {NOTE}" + (f"\n{subtitle}" if subtitle else ""), fontsize=12)
    grid = fig.add_gridspec(rows, 24, left=0.04, right=0.99, top=1 - 1.0 / (rows * 0.45 + 1.2), bottom=0.02,
                            hspace=2.2, wspace=1.2)
    store = open_store(db_url, readonly=True)
    try:
        for panel in dash["panels"]:
            g = panel["gridPos"]
            ax = fig.add_subplot(grid[g["y"]:g["y"] + g["h"], g["x"]:g["x"] + g["w"]])
            ax.set_title(panel["title"], fontsize=10, loc="left")
            try:
                _draw(ax, panel, store, scrapes, t0, t_from, t_to)
            except Exception as exc:  # one panel failing is shown on it, the others still drawn
                log.exception("panel %s", panel["title"])
                ax.text(0.5, 0.5, f"failed: {exc}"[:120], ha="center", va="center", fontsize=8, color="red")
                ax.set_axis_off()
    finally:
        store.close()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=60)
    plt.close(fig)
    log.info("wrote %s", out_png)
    return out_png


def _draw(ax, panel: dict, store, scrapes: list, t0: float, t_from: float, t_to: float) -> None:
    targets = panel["targets"]
    if targets[0]["datasource"]["type"] == "postgres":
        sql = expand_macros(targets[0]["rawSql"], t_from, t_to)
        cur = store.execute(sql)
        cols = [c.name for c in cur.description]
        data = cur.fetchall()
        store.rollback()
        if targets[0].get("format") == "time_series":  # (time, metric, value): bars per metric
            labels = sorted({r[cols.index("metric")] for r in data})
            totals = {lab: sum(r[cols.index("value")] for r in data if r[cols.index("metric")] == lab) for lab in labels}
            ax.bar(labels, [totals[lab] for lab in labels])
            days = sorted({r[0].date().isoformat() for r in data})
            ax.set_xlabel(f"day(s) {', '.join(days)}", fontsize=8)
            ax.tick_params(labelsize=8)
            return
        ax.set_axis_off()
        shown = [[_cell(v) for v in r] for r in data[:MAX_TABLE_ROWS]]
        if shown:
            table = ax.table(cellText=shown, colLabels=cols, loc="upper center", cellLoc="left")
            table.auto_set_font_size(False)
            table.set_fontsize(8)
        ax.text(0, -0.02, f"{len(data)} rows" + (f" (first {MAX_TABLE_ROWS} shown)" if len(data) > MAX_TABLE_ROWS else ""),
                transform=ax.transAxes, fontsize=8, va="top")
        return
    if panel["type"] == "stat":
        ax.set_axis_off()
        parts = []
        for target in targets:
            series = promql_series(target["expr"], scrapes)
            last = sum(vs[-1] for _ts, vs in series.values() if vs) if series else 0
            parts.append(f"{target.get('legendFormat', '')}: {last:g}")
        ax.text(0.5, 0.45, "\n".join(parts), ha="center", va="center", fontsize=13, transform=ax.transAxes)
        return
    many = False
    for target in targets:
        series = promql_series(target["expr"], scrapes)
        many = many or len(series) > 8
        for key, (ts, vs) in sorted(series.items()):
            legend = target.get("legendFormat", "") or key
            legend = re.sub(r"\{\{\s*\w+\s*\}\}", key, legend)
            ax.plot([t - t0 for t in ts], vs, lw=0.6 if len(series) > 8 else 1.5, alpha=0.5 if len(series) > 8 else 1,
                    label=None if len(series) > 8 else legend)
    ax.set_xlabel("s since the first scrape", fontsize=8)
    ax.tick_params(labelsize=8)
    if many:
        ax.text(0.99, 0.97, "one line per device", ha="right", va="top", fontsize=8, transform=ax.transAxes)
    else:
        ax.legend(fontsize=8, loc="upper left")
