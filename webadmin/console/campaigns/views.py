"""Campaign pages: list, detail with a live progress fragment, controls and the message log."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from webadmin.access import Role, allow
from webadmin.console.analytics.views import campaign_charts
from webadmin.console.request_info import page_arg
from webadmin.extensions import db, htmx
from webadmin.models.campaign import SOURCES, Campaign, CampaignStatus
from webadmin.models.message import MessageState
from webadmin.models.types import utcnow
from webadmin.sending.audience import AudienceSpec, count_audience
from webadmin.services import ServiceError, campaign_views, campaigns, settings

bp = Blueprint("campaigns", __name__, url_prefix="/campaigns")
bp.add_app_template_global(campaigns.is_held, "campaign_held")
S = CampaignStatus
# How often the progress fragment asks again: every second while sending; a paused campaign still finishes its
# batches in flight; a scheduled one slowly until its time is near (not every second for days); a held one waits
# for a person, perhaps on another screen.
POLL_SENDING, POLL_PAUSED, POLL_HELD, POLL_OVERDUE = 1, 5, 60, 10
POLL_SCHEDULED_MIN, POLL_SCHEDULED_MAX = 2, 60


def _campaign_or_404(campaign_id: int) -> Campaign:
    """The campaign, or 404."""
    return db.session.get(Campaign, campaign_id) or abort(404)


@bp.route("/")
@allow(Role.VIEWER)
def index():
    """All campaigns with filters and pages."""
    page = campaign_views.campaign_list(
        status=request.args.get("status") or None, source=request.args.get("source") or None,
        q=request.args.get("q") or None, page=page_arg(),
    )
    statuses = [s.value for s in CampaignStatus] + [campaign_views.HELD]
    return render_template("campaigns/index.html", page=page, statuses=statuses, sources=SOURCES)


def poll_seconds(campaign: Campaign) -> int | None:
    """Seconds until the progress fragment polls again, or None when nothing more can change by itself."""
    if campaign.status == S.SENDING.value:
        return POLL_SENDING
    if campaign.status == S.PAUSED.value:
        return POLL_PAUSED
    if campaign.status != S.SCHEDULED.value or campaign.scheduled_at is None:
        return None
    if campaigns.is_held(campaign):
        return POLL_HELD
    until = (campaign.scheduled_at - utcnow()) / timedelta(seconds=1)
    if until <= 0:
        return POLL_OVERDUE  # the scheduler starts it within a minute, or holds it
    return int(min(POLL_SCHEDULED_MAX, max(POLL_SCHEDULED_MIN, until)))


def _progress(campaign: Campaign):
    """The progress fragment, with the controls and status badge swapped out of band (they change with it)."""
    return render_template("campaigns/_progress.html", campaign=campaign, poll=poll_seconds(campaign),
                           form=FlaskForm(), oob=True)


@bp.route("/<int:campaign_id>")
@allow(Role.VIEWER)
def detail(campaign_id: int):
    """A campaign: content, audience, live progress (a fragment that polls while sending), controls, log."""
    campaign = _campaign_or_404(campaign_id)
    if htmx and htmx.target == "campaigns-progress":
        return _progress(campaign)
    audience_now = None
    if campaign.status == CampaignStatus.DRAFT.value:
        spec = AudienceSpec.from_dict(campaign.audience)
        audience_now = count_audience(campaign.app_id, spec, settings.get("delivery.device_selection"))
    charts = campaign_charts(campaign) if campaign.status != CampaignStatus.DRAFT.value else None
    return render_template("campaigns/detail.html", campaign=campaign, poll=poll_seconds(campaign),
                           audience_now=audience_now, form=FlaskForm(), log=_log(campaign),
                           states=list(MessageState), charts=charts)


def _log(campaign: Campaign) -> campaign_views.Page:
    """The message log page asked for in the query string."""
    args = request.args
    return campaign_views.message_log(campaign.id, key=args.get("key") or None, state=args.get("state") or None,
                                      error=args.get("error") or None, page=page_arg())


@bp.route("/<int:campaign_id>/messages")
@allow(Role.VIEWER)
def messages(campaign_id: int):
    """The per-message log (a fragment for htmx; the full page otherwise)."""
    campaign = _campaign_or_404(campaign_id)
    if htmx and htmx.target == "campaigns-log":
        return render_template("campaigns/_log.html", campaign=campaign, log=_log(campaign), states=list(MessageState))
    return redirect(url_for("campaigns.detail", campaign_id=campaign_id, **request.args))


ACTIONS = {
    "send": (lambda c, u: campaigns.start(c, actor=u), "Sending started."),
    "schedule": (lambda c, u: campaigns.schedule(c, c.scheduled_at, actor=u), "Scheduled."),
    "pause": (lambda c, u: campaigns.pause(c, actor=u), "Paused after the batches in flight."),
    "resume": (lambda c, u: campaigns.resume(c, actor=u), "Resumed."),
    "cancel": (lambda c, u: campaigns.cancel(c, actor=u), "Cancelled."),
    "confirm": (lambda c, u: campaigns.confirm_held(c, actor=u), "Sending now."),
}


@bp.route("/<int:campaign_id>/<any(send, schedule, pause, resume, cancel, confirm):action>", methods=["POST"])
@allow(Role.MARKETER)
def control(campaign_id: int, action: str):
    """Send, schedule, pause, resume, cancel or confirm; a second click finds the state already changed."""
    campaign, form = _campaign_or_404(campaign_id), FlaskForm()
    if not form.validate_on_submit():
        abort(400)
    run, done = ACTIONS[action]
    try:
        run(campaign, current_user)
    except ServiceError as exc:
        db.session.rollback()
        flash(exc.message, "warning")
    else:
        flash(done, "success")
    return redirect(url_for("campaigns.detail", campaign_id=campaign_id))
