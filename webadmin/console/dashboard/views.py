"""The dashboard page and its demo-data offer (the load runs in a queue task; a fragment shows its progress)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from flask import Blueprint, current_app, flash, make_response, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from webadmin.access import Role, allow
from webadmin.console.analytics.views import chart
from webadmin.console.analytics.zone import remember_zone, viewer_zone
from webadmin.extensions import htmx
from webadmin.models.demo import DemoLoad
from webadmin.models.types import utcnow
from webadmin.services import analytics, demo

bp = Blueprint("dashboard", __name__)
log = logging.getLogger(__name__)
SUMMARY_SECONDS = 60  # "Your data" counts whole tables: with millions of devices, once a minute per worker is enough
REPORT_FOR = timedelta(minutes=15)  # how long the dashboard shows a finished load's report
POLL_SECONDS = 1


def _summary(fresh: bool = False) -> list[tuple[str, int]]:
    """demo.summary(), kept for a minute once there is data (an empty install is counted on every view, so the
    dashboard stops offering demo data the moment there is some; so is one with a demo load in view)."""
    cache = current_app.extensions.setdefault("dashboard_summary", {})
    if not fresh and cache.get("until", 0) > time.monotonic():
        return cache["summary"]
    summary = demo.summary()
    if any(count for _, count in summary) and not fresh:
        cache.update(summary=summary, until=time.monotonic() + SUMMARY_SECONDS)
    return summary


def _load_in_view() -> DemoLoad | None:
    """The demo load the dashboard shows: one queued or running, or one that finished a short while ago."""
    load = demo.latest()
    if load is None or load.active or (load.finished_at and load.finished_at > utcnow() - REPORT_FOR):
        return load
    return None


@bp.route("/")
@allow(Role.VIEWER)
def index():
    """Home: 7- and 30-day KPIs, sends and opens per day and recent campaigns once there is data; on an empty
    install, an offer to load demo data; the progress of a demo load."""
    zone, problem = viewer_zone()
    demo_load = _load_in_view()
    summary = _summary(fresh=demo_load is not None)
    days, kpis = analytics.home(zone)
    month = kpis[-1]
    recent, recent_ids = analytics.recent_campaigns(zone)
    page = render_template(
        "dashboard/index.html", summary=summary, demo_form=FlaskForm(), empty=not any(n for _, n in summary),
        kpis=kpis, daily=chart("daily", month.window, days) if month.sent or month.failed else None,
        recent=recent, recent_links=[url_for("campaigns.detail", campaign_id=i) for i in recent_ids],
        zone=zone, problem=problem, demo_load=demo_load, poll=POLL_SECONDS,
    )
    return remember_zone(make_response(page), zone, problem)


@bp.route("/demo", methods=["POST"])
@allow(Role.ADMIN)
def load_demo():
    """Start loading the demo data set in a queue task (admins only; the same as `flask demo load`). One load at a
    time: while one is queued or running, this says so and starts nothing."""
    from webadmin.tasks import load_demo_data

    form = FlaskForm()
    if not form.validate_on_submit():
        flash("The form expired; nothing was started. Please try again.", "danger")
        return redirect(url_for("dashboard.index"))
    try:
        load = demo.start(current_user)
    except demo.DemoLoadBusy as busy:
        flash(busy.message, "warning")
        return redirect(url_for("dashboard.index"))
    try:
        load_demo_data(load.id)
    except Exception as exc:  # noqa: BLE001  (the queue is down: the load must not hold the slot)
        log.exception("demo load %s: could not queue it", load.id)
        demo.fail(load.id, f"Could not queue the load: {type(exc).__name__}: {exc}")
        flash("The demo load could not be queued; see below.", "danger")
        return redirect(url_for("dashboard.index"))
    current_app.extensions.pop("dashboard_summary", None)
    flash("Loading demo data in the background; the dashboard shows its progress.", "info")
    return redirect(url_for("dashboard.index"))


@bp.route("/demo/status")
@allow(Role.VIEWER)
def demo_status():
    """The demo load's progress fragment (polled by htmx while it runs); without htmx, the dashboard shows it."""
    if not (htmx and htmx.target == "demo-load"):
        return redirect(url_for("dashboard.index"))
    return render_template("dashboard/_demo_load.html", demo_load=_load_in_view(), demo_form=FlaskForm(),
                           poll=POLL_SECONDS)
