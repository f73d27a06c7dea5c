"""The dashboard page and its demo-data offer."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, flash, make_response, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from webadmin.access import Role, allow
from webadmin.console.analytics.views import chart
from webadmin.console.analytics.zone import remember_zone, viewer_zone
from webadmin.services import analytics, demo

bp = Blueprint("dashboard", __name__)
SUMMARY_SECONDS = 60  # "Your data" counts whole tables: with millions of devices, once a minute per worker is enough


def _summary() -> list[tuple[str, int]]:
    """demo.summary(), kept for a minute once there is data (an empty install is counted on every view, so the
    dashboard stops offering demo data the moment there is some)."""
    cache = current_app.extensions.setdefault("dashboard_summary", {})
    if cache.get("until", 0) > time.monotonic():
        return cache["summary"]
    summary = demo.summary()
    if any(count for _, count in summary):
        cache.update(summary=summary, until=time.monotonic() + SUMMARY_SECONDS)
    return summary


@bp.route("/")
@allow(Role.VIEWER)
def index():
    """Home: 7- and 30-day KPIs, sends and opens per day and recent campaigns once there is data; on an empty
    install, an offer to load demo data."""
    zone, problem = viewer_zone()
    summary = _summary()
    days, kpis = analytics.home(zone)
    month = kpis[-1]
    recent, recent_ids = analytics.recent_campaigns(zone)
    page = render_template(
        "dashboard/index.html", summary=summary, demo_form=FlaskForm(), empty=not any(n for _, n in summary),
        kpis=kpis, daily=chart("daily", month.window, days) if month.sent or month.failed else None,
        recent=recent, recent_links=[url_for("campaigns.detail", campaign_id=i) for i in recent_ids],
        zone=zone, problem=problem,
    )
    return remember_zone(make_response(page), zone, problem)


@bp.route("/demo", methods=["POST"])
@allow(Role.ADMIN)
def load_demo():
    """Load the demo data set (admins only; the same as `flask demo load`)."""
    form = FlaskForm()
    if form.validate_on_submit():
        report = demo.load(actor=current_user)
        current_app.extensions.pop("dashboard_summary", None)
        flash(f"Demo data loaded: {report}.", "success")
    return redirect(url_for("dashboard.index"))
