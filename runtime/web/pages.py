"""The HTML pages: live, detections, counts, health, login. Rendered on the server from the package's templates;
the only script is ``static/app.js`` (review buttons, keyboard shortcuts, live refresh)."""

from __future__ import annotations

import logging
import time

from flask import (
    Blueprint,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from runtime.web.app import current_settings, db

log = logging.getLogger(__name__)

pages = Blueprint("pages", __name__)

NAV = (("pages.live", "Live"), ("pages.detections", "Detections"), ("pages.counts", "Counts"),
       ("pages.health", "Health"), ("pages.model", "Model"))
STUDIO_NAV = (("studio.projects", "Studio"),)
DEVICE_FREE = {"pages.index", "pages.login", "pages.logout"}  # the pages that need no device log


def nav_for(settings) -> tuple:
    """The header links: the device pages when there is a log, the studio when there are projects."""
    return (NAV if settings.db is not None else ()) + (STUDIO_NAV if settings.projects is not None else ())


def _render(template: str, **kw):
    settings = current_settings()
    return render_template(template, nav=nav_for(settings), device=settings.db, **kw)


@pages.before_request
def _studio_only():
    if current_settings().db is None and request.endpoint not in DEVICE_FREE:
        return redirect(url_for("studio.projects"))
    return None


@pages.get("/")
def index():
    if current_settings().db is None:
        return redirect(url_for("studio.projects"))
    return redirect(url_for("pages.live"))


@pages.get("/live")
def live():
    from runtime.web.live import live_status

    status = live_status(current_settings(), db(), now=current_app.config["FIELDEAR_CLOCK"](),
                         state=current_app.config["FIELDEAR_STATUS_STATE"])
    return _render("live.html", s=status)


@pages.get("/detections")
def detections():
    from runtime.store.queries import (
        REVIEW_STATES,
        count_events,
        days_seen,
        event_scores,
        labels_seen,
        reviewed_events,
    )
    from runtime.web.api import event_filter, event_json
    from runtime.web.plots import sparkline

    flt = event_filter(request.args)
    conn = db()
    rows = []
    for e in reviewed_events(conn, flt):
        row = event_json(e)
        row["scores_svg"] = sparkline(event_scores(conn, e), (e["start_s"], e["end_s"]),
                                      title=f"{e['label']} score over time (event shaded, dashes at 0.5)")
        rows.append(row)
    total = count_events(conn, flt)
    labels = labels_seen(conn)
    args = {k: v for k, v in request.args.items() if k != "offset" and v}
    prev_offset = max(0, flt.offset - flt.limit) if flt.offset > 0 else None
    next_offset = flt.offset + flt.limit if flt.offset + flt.limit < total else None
    return _render("detections.html", rows=rows, total=total, flt=flt, labels=labels,
                   relabel_choices=sorted({*labels, "background"}), days=days_seen(conn),
                   review_states=REVIEW_STATES, args=args, prev_offset=prev_offset, next_offset=next_offset)


@pages.get("/counts")
def counts():
    from runtime.store.queries import counts_per_day
    from runtime.web.plots import counts_chart

    rows = counts_per_day(db())
    days = sorted({d for d, _, _ in rows}, reverse=True)
    labels = sorted({lab for _, lab, _ in rows})
    table = {(d, lab): n for d, lab, n in rows}
    return _render("counts.html", chart=counts_chart(rows), days=days, labels=labels, table=table)


@pages.get("/health")
def health():
    from runtime.store.queries import health_history
    from runtime.web.plots import line_chart

    beats = health_history(db(), limit=300)
    x = [b["t_utc"][5:16].replace("T", " ") for b in beats]
    chart_sys = line_chart(x, {"RSS MB": [b.get("rss_mb") for b in beats],
                               "CPU \u00b0C": [b.get("cpu_temp_c") for b in beats]}, "memory and temperature")
    chart_err = line_chart(x, {k: [b.get(k) for b in beats] for k in ("overruns", "dropped_blocks", "dropped_rows")},
                           "overruns and drops (cumulative per run)")
    return _render("health.html", beats=list(reversed(beats))[:100], chart_sys=chart_sys, chart_err=chart_err)


@pages.get("/model")
def model():
    from runtime.store.queries import review_counts

    return _render("model.html", m=current_app.config["FIELDEAR_MODELS"].overview(), reviews=review_counts(db()))


@pages.route("/login", methods=("GET", "POST"))
def login():
    from runtime.web.passwords import verify_password

    settings = current_settings()
    nxt = request.values.get("next") or url_for("pages.live")
    if not nxt.startswith("/") or nxt.startswith("//"):
        nxt = url_for("pages.live")
    if settings.password_hash is None:
        return redirect(nxt)
    error = None
    if request.method == "POST":
        if verify_password(settings.password_hash, request.form.get("password", "")):
            csrf = session.get("csrf")
            session.clear()
            session["auth"] = True
            if csrf:
                session["csrf"] = csrf
            return redirect(nxt)
        time.sleep(0.5)
        log.warning("failed login from %s", request.remote_addr)
        error = "wrong password"
    return _render("login.html", error=error, next=nxt), (401 if error else 200)


@pages.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("pages.login"))
