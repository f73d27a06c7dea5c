"""Campaign lifecycle. Every status change goes through `transition` (an allow-table, compare-and-set)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, select, update

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.campaign import SOURCES, Campaign, CampaignStatus
from webadmin.models.message import PENDING_STATES, Message, MessageState
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.sending.audience import AudienceSpec, materialize
from webadmin.services import ServiceError, audit, settings
from webadmin.services.deep_links import validate_deep_link, validate_image_url

S = CampaignStatus
MAX_TEXT = 2000
MAX_TTL = 28 * 24 * 3600  # FCM's and APNs' longest
# from-status → the statuses it may move to. Nothing else may assign Campaign.status.
ALLOWED: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    S.DRAFT: frozenset({S.SCHEDULED, S.SENDING, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.SENDING, S.CANCELLED, S.DRAFT}),
    S.SENDING: frozenset({S.PAUSED, S.SENT, S.CANCELLED, S.FAILED}),
    S.PAUSED: frozenset({S.SENDING, S.CANCELLED}),
    S.SENT: frozenset(),
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
}


@dataclass
class CampaignDraft:
    """What a campaign says and to whom, as submitted by the console or the API."""

    app_id: int
    text: str
    title: str | None = None
    open_direct: str | None = None
    data: dict[str, str] | None = None
    image_url: str | None = None
    ttl: int | None = None
    audience: dict[str, Any] | None = None
    source: str = "adhoc"
    related_type: str | None = None
    related_id: str | None = None
    tag: str | None = None
    template_slug: str | None = None
    scheduled_at: datetime | None = None
    schedule_time_zone: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    sms_fallback_seconds: int | None = None  # SMS to subscribers who open no push within this many seconds
    sms_fallback_text: str | None = None


def _actor_fields(actor: User | str | None) -> dict[str, Any]:
    """created_by columns for a user, an API key label or the system."""
    if isinstance(actor, User):
        return {"created_by_id": actor.id, "created_by": actor.email}
    return {"created_by_id": None, "created_by": actor or "system"}


def create_campaign(draft: CampaignDraft, *, actor: User | str | None) -> Campaign:
    """Validate and store a draft campaign (not yet sent)."""
    app = db.session.get(App, draft.app_id)
    if app is None:
        raise ServiceError("Choose an app.", field="app_id")
    if not draft.text or not draft.text.strip():
        raise ServiceError("Write the message text.", field="text")
    if len(draft.text) > MAX_TEXT:
        raise ServiceError(f"The text is longer than {MAX_TEXT:,} characters.", field="text")
    if draft.ttl is not None and not 0 <= draft.ttl <= MAX_TTL:
        raise ServiceError("The time to live is between 0 seconds and 28 days.", field="ttl")
    if draft.scheduled_at is not None and (draft.scheduled_at.tzinfo is None or draft.scheduled_at <= utcnow()):
        raise ServiceError("Choose a time in the future, with its time zone.", field="scheduled_at")
    draft.open_direct = validate_deep_link(draft.open_direct, app.deep_link_scheme)
    draft.image_url = validate_image_url(draft.image_url)
    if draft.source not in SOURCES:
        raise ServiceError(f"Unknown source {draft.source!r}.", field="source")
    spec = AudienceSpec.from_dict(draft.audience or {"type": "all"})
    values = {k: v for k, v in vars(draft).items() if k != "audience"}
    values["data"] = draft.data or {}
    campaign = Campaign(**values, audience=spec.to_dict(), status=S.DRAFT.value, **_actor_fields(actor))
    db.session.add(campaign)
    db.session.flush()
    return campaign


def transition(campaign: Campaign, to: CampaignStatus, *, reason: str | None = None, **extra: Any) -> bool:
    """Move a campaign to `to` if the allow-table permits it from its current status in the database.

    A compare-and-set UPDATE: of two workers racing to start or finish a campaign, exactly one wins.
    """
    sources = [frm.value for frm, targets in ALLOWED.items() if to in targets]
    values: dict[str, Any] = {"status": to.value, "status_reason": reason, "updated_at": utcnow(), **extra}
    result = db.session.execute(
        update(Campaign).where(Campaign.id == campaign.id, Campaign.status.in_(sources)).values(**values)
    )
    won = result.rowcount == 1
    if won:
        db.session.refresh(campaign)
    return won


def _require(won: bool, campaign: Campaign, action: str) -> None:
    """Turn a lost compare-and-set into a clear error."""
    if not won:
        db.session.rollback()
        raise ServiceError(f"Cannot {action} a campaign that is {campaign.status}.", code="conflict")


def start(campaign: Campaign, *, actor: User | str | None, enqueue: bool = True) -> int:
    """Materialise the messages and hand the campaign to the workers; returns the number targeted.

    With enqueue=False the caller finishes writing (e.g. message extras) and calls `hand_to_workers` itself.
    """
    _require(transition(campaign, S.SENDING, started_at=utcnow()), campaign, "send")
    spec = AudienceSpec.from_dict(campaign.audience)
    targeted = materialize(campaign.id, campaign.app_id, spec, settings.get("delivery.device_selection"), campaign.tag)
    db.session.execute(update(Campaign).where(Campaign.id == campaign.id).values(targeted=targeted))
    audit.record("campaign.send", actor=actor, obj=("campaign", campaign.id), targeted=targeted)
    db.session.commit()
    if enqueue:
        hand_to_workers(campaign.id, targeted)
    return targeted


def hand_to_workers(campaign_id: int, pending: int) -> None:
    """Queue the dispatch tasks of a started campaign."""
    from webadmin.tasks import enqueue_dispatch

    enqueue_dispatch(campaign_id, pending)


def schedule(campaign: Campaign, when: datetime | None, *, actor: User | str | None) -> None:
    """Send later; the scheduler starts it at `when` (timezone-aware)."""
    if when is None:
        raise ServiceError("Choose when to send.", field="scheduled_at")
    if when.tzinfo is None:
        raise ServiceError("The schedule needs a time zone.", field="scheduled_at")
    if when <= utcnow():
        raise ServiceError("Choose a time in the future.", field="scheduled_at")
    _require(transition(campaign, S.SCHEDULED, scheduled_at=when), campaign, "schedule")
    audit.record("campaign.schedule", actor=actor, obj=("campaign", campaign.id), at=when.isoformat())
    db.session.commit()
    from webadmin.tasks import start_scheduled

    start_scheduled.schedule((campaign.id,), eta=when)


def pause(campaign: Campaign, *, actor: User | str | None, reason: str | None = None) -> None:
    """Stop sending after the batches in flight (workers check between batches)."""
    _require(transition(campaign, S.PAUSED, reason=reason), campaign, "pause")
    audit.record("campaign.pause", actor=actor, obj=("campaign", campaign.id), reason=reason)
    db.session.commit()


def resume(campaign: Campaign, *, actor: User | str | None) -> None:
    """Continue a paused campaign."""
    _require(transition(campaign, S.SENDING), campaign, "resume")
    audit.record("campaign.resume", actor=actor, obj=("campaign", campaign.id))
    db.session.commit()
    from webadmin.tasks import enqueue_dispatch

    enqueue_dispatch(campaign.id, pending_count(campaign.id))


def cancel(campaign: Campaign, *, actor: User | str | None) -> int:
    """Cancel before or during sending; messages not yet claimed by a worker are marked cancelled."""
    _require(transition(campaign, S.CANCELLED, finished_at=utcnow()), campaign, "cancel")
    now = utcnow()
    stopped = db.session.execute(
        update(Message)
        .where(
            Message.campaign_id == campaign.id,
            Message.state.in_(PENDING_STATES),
            (Message.lease_until.is_(None)) | (Message.lease_until < now),
        )
        .values(state=MessageState.ERROR.value, error="campaign cancelled", retry_sending=False, changed_at=now)
    ).rowcount
    db.session.execute(
        update(Campaign)
        .where(Campaign.id == campaign.id)
        .values(cancelled=Campaign.cancelled + stopped, retrying=0)
    )
    audit.record("campaign.cancel", actor=actor, obj=("campaign", campaign.id), stopped=stopped)
    db.session.commit()
    return stopped


def pending_count(campaign_id: int) -> int:
    """Messages still waiting or due for a retry (uses the partial pending index)."""
    return db.session.scalar(
        select(func.count(Message.id)).where(Message.campaign_id == campaign_id, Message.state.in_(PENDING_STATES))
    ) or 0


def start_if_due(campaign_id: int) -> str:
    """Start a scheduled campaign whose time has come; hold it if its time passed too long ago."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or campaign.status != S.SCHEDULED.value or campaign.scheduled_at is None:
        return "not scheduled"
    now = utcnow()
    if campaign.scheduled_at > now:
        return "not yet"
    window = timedelta(minutes=current_app.config.get("SCHEDULE_MISSED_WINDOW_MINUTES", 15))
    if now - campaign.scheduled_at > window:
        if campaign.status_reason is None:
            campaign.status_reason = (
                f"Missed its time ({campaign.scheduled_at:%Y-%m-%d %H:%M} UTC) while nothing was running; "
                "held for a person to confirm or cancel."
            )
            audit.record("campaign.hold", actor="scheduler", obj=("campaign", campaign.id))
            db.session.commit()
        return "held"
    start(campaign, actor="scheduler")
    return "started"


def confirm_held(campaign: Campaign, *, actor: User | str | None) -> int:
    """A person confirms a held (late) scheduled campaign: send it now."""
    if campaign.status != S.SCHEDULED.value:
        raise ServiceError(f"Cannot confirm a campaign that is {campaign.status}.", code="conflict")
    return start(campaign, actor=actor)


def due_campaign_ids() -> list[int]:
    """Scheduled campaigns whose time has come and that are not held."""
    return list(
        db.session.scalars(
            select(Campaign.id).where(
                Campaign.status == S.SCHEDULED.value,
                Campaign.scheduled_at <= utcnow(),
                Campaign.status_reason.is_(None),
            )
        )
    )
