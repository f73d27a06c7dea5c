"""Campaign lifecycle. Every status change goes through `transition` (an allow-table, compare-and-set)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import and_, func, select, update
from sqlalchemy.sql.elements import ColumnElement

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.campaign import SOURCES, Campaign, CampaignStatus
from webadmin.models.message import PENDING_STATES, Message
from webadmin.models.offer import OFFER_KINDS, Offer
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.sending.audience import AudienceSpec, materialize
from webadmin.services import ServiceError, audit, settings
from webadmin.services.deep_links import validate_deep_link, validate_image_url

S = CampaignStatus
MAX_TEXT = 2000
MAX_TTL = 28 * 24 * 3600  # FCM's and APNs' longest
# Custom data travels as FCM `data` (and APNs top-level keys): string pairs, at most 4096 bytes per FCM message.
# FCM refuses the whole message for a reserved key ("from", "notification", "message_type", "collapse_key", any
# key starting with "google" or "gcm"); "aps", "openDirect" and "imageUrl" are the keys the providers write
# themselves, which custom data would silently overwrite.
DATA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MAX_DATA_KEYS = 50
MAX_DATA_VALUE = 1024
MAX_DATA_BYTES = 4096
RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type", "collapse_key", "aps", "opendirect",
                                "imageurl"})
RESERVED_DATA_PREFIXES = ("google", "gcm")
# from-status → the statuses it may move to. Nothing else may assign Campaign.status.
ALLOWED: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    S.DRAFT: frozenset({S.SCHEDULED, S.SENDING, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.SENDING, S.CANCELLED, S.DRAFT, S.FAILED}),
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


def _data_problem(data: dict[str, str]) -> str | None:
    """Why this custom data would be refused by a provider, or None when it is fine."""
    if len(data) > MAX_DATA_KEYS:
        return f"At most {MAX_DATA_KEYS} custom data keys."
    size = 0
    for key, value in data.items():
        if not isinstance(key, str) or not DATA_KEY.fullmatch(key):
            return (f"Custom data key {str(key)[:70]!r} is not allowed: 1-64 letters, digits, _ . - "
                    "(starting with a letter or _).")
        if key.lower() in RESERVED_DATA_KEYS or key.lower().startswith(RESERVED_DATA_PREFIXES):
            return f"Custom data key {key!r} is reserved (FCM refuses from, notification, message_type, google…, gcm…)."
        if not isinstance(value, str) or "\x00" in value or len(value) > MAX_DATA_VALUE:
            return f"The value of {key!r} must be text of at most {MAX_DATA_VALUE:,} characters."
        size += len(key.encode()) + len(value.encode())
    if size > MAX_DATA_BYTES:
        return f"Custom data is {size:,} bytes; FCM accepts at most {MAX_DATA_BYTES:,} per push."
    return None


def _check_content(draft: CampaignDraft) -> None:
    """Text, time to live and custom data within what the providers accept."""
    if not draft.text or not draft.text.strip():
        raise ServiceError("Write the message text.", field="text")
    if len(draft.text) > MAX_TEXT:
        raise ServiceError(f"The text is longer than {MAX_TEXT:,} characters.", field="text")
    if draft.ttl is not None and not 0 <= draft.ttl <= MAX_TTL:
        raise ServiceError("The time to live is between 0 seconds and 28 days.", field="ttl")
    if (problem := _data_problem(draft.data or {})) is not None:
        raise ServiceError(problem, field="data")


def create_campaign(draft: CampaignDraft, *, actor: User | str | None) -> Campaign:
    """Validate and store a draft campaign (not yet sent): the one check shared by the console and the API."""
    app = db.session.get(App, draft.app_id)
    if app is None:
        raise ServiceError("Choose an app.", field="app_id")
    _check_content(draft)
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


def transition(campaign: Campaign, to: CampaignStatus, *, reason: str | None = None,
               expected: CampaignStatus | None = None, **extra: Any) -> bool:
    """Move a campaign to `to` if the allow-table permits it from its current status in the database (and that
    status is `expected`, when given).

    A compare-and-set UPDATE: of two workers racing to start or finish a campaign, exactly one wins.
    """
    sources = [frm.value for frm, targets in ALLOWED.items() if to in targets and expected in (None, frm)]
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


def offer_refusal(campaign: Campaign, at: datetime | None = None) -> str | None:
    """Why the campaign's offer or product cannot go out at `at` (default now), or None when it can.

    Checked when the campaign is sent or scheduled, not only when it is composed: an offer archived or expired
    after its draft was saved must not be pushed. An id that names no offer is left alone: offers are never
    deleted (only archived), so it is a pymess related object of the caller's own, not one of ours.
    """
    if campaign.related_type not in OFFER_KINDS or not (campaign.related_id or "").isdigit():
        return None
    offer = db.session.get(Offer, int(campaign.related_id)) if int(campaign.related_id) < 2**31 else None
    if offer is None:
        return None
    if not offer.is_current(at or utcnow()):
        when = f"on {at:%Y-%m-%d %H:%M} UTC" if at else "now"
        return f"“{offer.name}” is not current {when} (expired, not yet valid or archived); it cannot be pushed."
    return None


def _require_offer(campaign: Campaign, at: datetime | None = None) -> None:
    """Refuse a push about an offer that is not current at `at`."""
    if (refusal := offer_refusal(campaign, at)) is not None:
        db.session.rollback()
        raise ServiceError(refusal, field="offer_id")


def start(campaign: Campaign, *, actor: User | str | None, enqueue: bool = True) -> int:
    """Materialise the messages and hand the campaign to the workers; returns the number targeted.

    With enqueue=False the caller finishes writing (e.g. message extras) and calls `hand_to_workers` itself.
    """
    _require_offer(campaign)
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
    _require_offer(campaign, when)
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
    """Cancel before or during sending; returns how many messages were stopped.

    Pending messages no worker holds end as ERROR "campaign cancelled" now; those in flight are ended the same way
    by their worker's recorder (or by the sweeper if that worker dies). Counters follow the rows actually stopped.
    """
    from webadmin.sending.engine import end_cancelled

    _require(transition(campaign, S.CANCELLED, finished_at=utcnow()), campaign, "cancel")
    stopped = end_cancelled(campaign.id)
    audit.record("campaign.cancel", actor=actor, obj=("campaign", campaign.id), stopped=stopped)
    db.session.commit()
    return stopped


def fail_scheduled(campaign_id: int, reason: str, *, actor: User | str | None) -> bool:
    """A scheduled campaign that cannot be started is given up (`failed`, with the reason); says whether it was.

    Only from `scheduled`: a campaign that did start (sending) is the sweeper's to recover, never failed here.
    """
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or not transition(campaign, S.FAILED, reason=reason[:500], expected=S.SCHEDULED,
                                          finished_at=utcnow()):
        db.session.rollback()
        return False
    audit.record("campaign.fail", actor=actor, obj=("campaign", campaign.id), reason=reason[:500])
    db.session.commit()
    return True


def pending_count(campaign_id: int) -> int:
    """Messages still waiting or due for a retry (uses the partial pending index)."""
    return db.session.scalar(
        select(func.count(Message.id)).where(Message.campaign_id == campaign_id, Message.state.in_(PENDING_STATES))
    ) or 0


def is_held(campaign: Campaign) -> bool:
    """Scheduled but held by the scheduler (missed its time, or its offer stopped being current)."""
    return campaign.status == S.SCHEDULED.value and campaign.status_reason is not None


def held_condition() -> ColumnElement[bool]:
    """`is_held` as a WHERE clause."""
    return and_(Campaign.status == S.SCHEDULED.value, Campaign.status_reason.is_not(None))


def _hold(campaign: Campaign, reason: str) -> None:
    """Keep a due scheduled campaign from starting until a person confirms or cancels it."""
    if campaign.status_reason is None:
        campaign.status_reason = reason
        audit.record("campaign.hold", actor="scheduler", obj=("campaign", campaign.id), reason=reason)
        db.session.commit()


def start_if_due(campaign_id: int) -> str:
    """Start a scheduled campaign whose time has come; hold it if its time passed too long ago or its offer is
    no longer current."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or campaign.status != S.SCHEDULED.value or campaign.scheduled_at is None:
        return "not scheduled"
    now = utcnow()
    if campaign.scheduled_at > now:
        return "not yet"
    window = timedelta(minutes=current_app.config.get("SCHEDULE_MISSED_WINDOW_MINUTES", 15))
    if now - campaign.scheduled_at > window:
        _hold(campaign, f"Missed its time ({campaign.scheduled_at:%Y-%m-%d %H:%M} UTC) while nothing was running; "
                        "held for a person to confirm or cancel.")
        return "held"
    if (refusal := offer_refusal(campaign, now)) is not None:
        _hold(campaign, f"Not sent at its time: {refusal} Held for a person to cancel.")
        return "held"
    start(campaign, actor="scheduler")
    return "started"


def confirm_held(campaign: Campaign, *, actor: User | str | None) -> int:
    """A person confirms a held (late) scheduled campaign: send it now."""
    db.session.refresh(campaign)
    if not is_held(campaign):
        state = "scheduled and not held" if campaign.status == S.SCHEDULED.value else campaign.status
        raise ServiceError(f"Only a held campaign can be confirmed; this one is {state}.", code="conflict")
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
