"""Inline SVG charts made on the server (no JavaScript, no plotting library): one line per series."""

from __future__ import annotations

from html import escape

# Distinct colours for up to 10 series (then they repeat).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    for step in (1, 2, 5):
        for mag in range(-3, 10):
            top = step * 10**mag
            if top >= v:
                return float(top)
    return float(v)


def line_chart(x_labels: list[str], series: dict[str, list[float | None]], title: str, y_label: str = "",
               width: int = 720, height: int = 260) -> str:
    """An ``<svg>`` element: x positions are the labels in order, one polyline (with point markers) per series;
    None values are gaps."""
    left, right, top, bottom = 48, 150, 26, 40
    pw, ph = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    y_max = _nice_max(max(values) if values else 1.0)
    n = max(len(x_labels), 1)

    def x(i: int) -> float:
        return left + (pw * (i + 0.5) / n)

    def y(v: float) -> float:
        return top + ph - ph * (v / y_max)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
           f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>']
    for k in range(5):
        v = y_max * k / 4
        yy = y(v)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" class="tick">{v:g}</text>')
    if y_label:
        out.append(f'<text x="12" y="{top + ph / 2:.0f}" transform="rotate(-90 12 {top + ph / 2:.0f})" '
                   f'text-anchor="middle" class="tick">{escape(y_label)}</text>')
    every = max(1, n // 8)
    for i, lab in enumerate(x_labels):
        if i % every == 0 or i == n - 1:
            out.append(f'<text x="{x(i):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">{escape(lab)}</text>')
    for s, (name, vs) in enumerate(series.items()):
        color = PALETTE[s % len(PALETTE)]
        runs, current = [], []
        for i, v in enumerate(vs):
            if v is None:
                if current:
                    runs.append(current)
                current = []
            else:
                current.append((x(i), y(v), v, i))
        if current:
            runs.append(current)
        for run in runs:
            if len(run) > 1:
                pts = " ".join(f"{a:.1f},{b:.1f}" for a, b, _, _ in run)
                out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
            for a, b, v, i in run:
                out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}">'
                           f'<title>{escape(name)} {escape(x_labels[i])}: {v:g}</title></circle>')
        ly = top + 12 + 16 * s
        out.append(f'<rect x="{left + pw + 12}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{left + pw + 28}" y="{ly}" class="legend">{escape(name)}</text>')
    if not values:
        out.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" class="tick">no data</text>')
    out.append("</svg>")
    return "\n".join(out)


def counts_chart(rows: list[tuple[str, str, int]]) -> str:
    """Per-label events per day (rows from ``runtime.store.queries.counts_per_day``)."""
    days = sorted({d for d, _, _ in rows})
    labels = sorted({lab for _, lab, _ in rows})
    table = {(d, lab): c for d, lab, c in rows}
    series = {lab: [float(table.get((d, lab), 0)) for d in days] for lab in labels}
    return line_chart(days, series, "events per day, by label", "events")


def sparkline(points: list[tuple[float, float]], span: tuple[float, float], width: int = 180, height: int = 34,
              title: str = "") -> str:
    """A small ``<svg>``: score (0..1) over stream time, the event's span shaded."""
    if not points:
        return ""
    t0 = min(min(t for t, _ in points), span[0])
    t1 = max(max(t for t, _ in points), span[1])
    dt = max(t1 - t0, 1e-6)

    def x(t: float) -> float:
        return 1 + (width - 2) * (t - t0) / dt

    def y(v: float) -> float:
        return 1 + (height - 2) * (1.0 - max(0.0, min(1.0, v)))

    pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
            f'<rect x="{x(span[0]):.1f}" y="0" width="{max(1.0, x(span[1]) - x(span[0])):.1f}" height="{height}" '
            f'fill="#fde9b0"/><line x1="0" y1="{y(0.5):.1f}" x2="{width}" y2="{y(0.5):.1f}" stroke="#ccc" '
            f'stroke-dasharray="3 3"/><polyline points="{pts}" fill="none" stroke="#24412f" stroke-width="1.5"/></svg>')
