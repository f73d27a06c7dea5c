"""Analytics pages: charts with their tables, CSV of every table, and plotly.js served from the package."""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable
from pathlib import Path

import plotly
from flask import Blueprint, Response, abort, make_response, render_template, request, url_for

from webadmin.access import Role, allow, public
from webadmin.console.analytics import charts
from webadmin.console.analytics.zone import remember_zone, viewer_zone
from webadmin.extensions import db
from webadmin.models.campaign import Campaign
from webadmin.services import analytics
from webadmin.services.analytics import RANGES, Table, Window

bp = Blueprint("analytics", __name__, url_prefix="/analytics")
PLOTLY_JS = Path(plotly.__file__).parent / "package_data"
DEFAULT_DAYS = 30

# table key → (builder, figure): every table the section shows, each downloadable as CSV.
TABLES: dict[str, tuple[Callable[[Window], Table], Callable[[Table], str]]] = {
    "daily": (analytics.daily, lambda t: charts.bars(t, "Day")),
    "hourly": (lambda w: analytics.hourly(w.zone), lambda t: charts.bars(t, "Hour")),
    "platforms": (analytics.by_platform, lambda t: charts.bars(t, "Platform")),
    "sources": (analytics.by_source, lambda t: charts.bars(t, "Source")),
    "offers": (analytics.by_offer, lambda t: charts.bars(t, "Offer", ("Sent", "Opened"))),
}
EXPORTS = (*TABLES, "recent")


def _window() -> tuple[Window, list[str]]:
    """The window asked for (?days= one of RANGES, ?tz=), with what was wrong with the request."""
    zone, problem = viewer_zone()
    problems = [problem] if problem else []
    days = request.args.get("days", DEFAULT_DAYS, type=int)
    if days not in RANGES:
        problems.append(f"Choose {', '.join(map(str, RANGES))} days: showing {DEFAULT_DAYS}.")
        days = DEFAULT_DAYS
    return Window.last(days, zone), problems


def chart(key: str, window: Window, table: Table | None = None) -> charts.Chart:
    """One of the section's charts, with its CSV link for the same window and zone."""
    build, draw = TABLES[key]
    table = table or build(window)
    return charts.Chart(table, draw(table), url_for("analytics.export", table=key, days=window.days,
                                                    tz=window.zone.key))


@bp.route("/")
@allow(Role.VIEWER)
def index():
    """Sends and opens over time (by day and by hour), by platform, by source and by offer."""
    window, problems = _window()
    platforms, sources = analytics.by_platform_and_source(window)  # one read of the rollups for both
    given = {"platforms": platforms, "sources": sources}
    page = render_template("analytics/index.html", charts=[chart(key, window, given.get(key)) for key in TABLES],
                           window=window, ranges=RANGES, problems=problems)
    return remember_zone(make_response(page), window.zone, problems[0] if problems else None)


def _csv(table: Table, filename: str) -> Response:
    """A CSV download of a table."""
    headers = {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"}
    return Response(table.csv(), mimetype="text/csv", headers=headers)


@bp.route("/<any(daily, hourly, platforms, sources, offers, recent):table>.csv")
@allow(Role.VIEWER)
def export(table: str):
    """One table of the section (or the dashboard's recent campaigns) as CSV, for the same days and zone."""
    window, _ = _window()
    if table == "recent":
        return _csv(analytics.recent_campaigns(window.zone)[0], "recent-campaigns.csv")
    return _csv(TABLES[table][0](window), f"{table}-{window.days}-days.csv")


@bp.route("/campaigns/<int:campaign_id>/<any(funnel, opens):table>.csv")
@allow(Role.VIEWER)
def campaign_export(campaign_id: int, table: str):
    """A campaign's funnel or open curve as CSV."""
    campaign = db.session.get(Campaign, campaign_id) or abort(404)
    if table == "funnel":
        data = analytics.funnel(campaign, analytics.funnel_extra_rows(campaign)).table()
    else:
        data = analytics.open_curve(campaign, viewer_zone()[0])
    return _csv(data, f"campaign-{campaign.id}-{table}.csv")


@functools.cache
def _plotly_bytes(encoding: str) -> bytes:
    """plotly.min.js as shipped in the plotly package, plain or gzip-compressed (read once per process)."""
    data = (PLOTLY_JS / "plotly.min.js").read_bytes()
    return gzip.compress(data, compresslevel=6, mtime=0) if encoding == "gzip" else data


@bp.route("/plotly.min.js")
@public
def plotly_js():
    """plotly.js from the installed plotly package (never a CDN); versioned URL, so cached for a year."""
    encoding = "gzip" if "gzip" in request.accept_encodings else "identity"
    response = Response(_plotly_bytes(encoding), mimetype="text/javascript")
    if encoding == "gzip":
        response.headers["Content-Encoding"] = "gzip"
    response.vary.add("Accept-Encoding")
    response.set_etag(f"plotly-{plotly.__version__}-{encoding}")
    response.cache_control.public = True
    response.cache_control.max_age = 365 * 24 * 3600
    return response.make_conditional(request)


def plotly_url() -> str:
    """The versioned URL of plotly.js."""
    return url_for("analytics.plotly_js", v=plotly.__version__)


bp.add_app_template_global(plotly_url, "plotly_url")


def campaign_charts(campaign: Campaign) -> tuple[charts.Chart, charts.Chart]:
    """The campaign page's funnel (with the extra stages other sections add) and its curve of opens."""
    zone, _ = viewer_zone()
    stages = analytics.funnel(campaign, analytics.funnel_extra_rows(campaign))
    curve = analytics.open_curve(campaign, zone)
    return (
        charts.Chart(stages.table(), charts.funnel(stages),
                     url_for("analytics.campaign_export", campaign_id=campaign.id, table="funnel")),
        charts.Chart(curve, charts.open_curve(curve),
                     url_for("analytics.campaign_export", campaign_id=campaign.id, table="opens", tz=zone.key)),
    )
