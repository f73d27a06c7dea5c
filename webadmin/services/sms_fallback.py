"""SMS fallback as the console sees it: the compose rules and preview, the campaign section and its stop, the
subscriber's SMS and block, and the funnel rows. Reads are set-based (GROUP BY / COUNT), never a loop over rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, select, update

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Subscriber
from webadmin.models.campaign import Campaign
from webadmin.models.sms import SmsBlock, SmsChannel, SmsMessage, SmsState
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.sending.audience import AudienceSpec, audience_select
from webadmin.services import ServiceError, audit
from webadmin.services.deep_links import validate_deep_link, web_link
from webadmin.sms import BACKENDS
from webadmin.sms.fallback import FALLBACK_CANCELLED, current_channel, end_pending, valid_phone
from webadmin.sms.segments import Segments, count_segments

Actor = User | str | None

MIN_WINDOW_SECONDS = 60  # the periodic run's interval; shorter would not be kept anyway
MAX_WINDOW_SECONDS = 72 * 3600  # later than three days an SMS about a push is stale
MAX_TEXT_CHARS = 2000  # what a marketer may type (the compose form and the API); parts are counted after
MAX_PARTS = 6  # a longer text costs six SMS per subscriber; SMSAPI refuses more parts by default
ROWS_SHOWN = 50
ACTIVE = (SmsState.WAITING.value, SmsState.ERROR_RETRY.value, SmsState.SENDING.value)


def sms_link(open_direct: str | None, app: App | None) -> str | None:
    """The deep link as an https URL for an SMS: an https link as it is, an app-scheme link under the app's web
    address (an SMS cannot open `nibs://`); None without one."""
    scheme = app.deep_link_scheme if app is not None else None
    try:
        link = validate_deep_link(open_direct, scheme)
    except ServiceError:  # the campaign itself refuses such a link; no SMS text is made from it
        return None
    return web_link(link, scheme, app.web_link_base if app is not None else None)


def default_text(push_text: str | None, open_direct: str | None, app: App | None = None) -> str:
    """The push text, plus the deep link when there is an https URL for it."""
    text = (push_text or "").strip()
    link = sms_link(open_direct, app)
    return f"{text} {link}".strip() if link else text


def window_label(seconds: int) -> str:
    """A window for people: 30 minutes, 2 hours, 90 minutes."""
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = max(1, seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def check_fallback(seconds: int | None, sms_text: str | None, push_text: str | None,
                   open_direct: str | None, app: App | None = None) -> str:
    """The SMS text to store (the default when blank), or a ServiceError naming the field."""
    if seconds is None or not MIN_WINDOW_SECONDS <= seconds <= MAX_WINDOW_SECONDS:
        raise ServiceError(f"Choose a window between {window_label(MIN_WINDOW_SECONDS)} and "
                           f"{window_label(MAX_WINDOW_SECONDS)}.", field="sms_after")
    text = (sms_text or "").strip() or default_text(push_text, open_direct, app)
    if not text:
        raise ServiceError("Write the SMS text.", field="sms_text")
    parts = count_segments(text).parts
    if parts > MAX_PARTS:
        raise ServiceError(f"The SMS would take {parts} parts; shorten it to at most {MAX_PARTS}.", field="sms_text")
    if current_channel() is None:
        raise ServiceError("No SMS channel is configured: an admin sets one up in Settings → SMS (Debug sends "
                           "nothing and is enough to try it).", field="sms_fallback")
    return text


def apply_to_draft(draft: Any) -> None:
    """Validate a draft's fallback and fill in its default text (a draft without a window has no fallback)."""
    if draft.sms_fallback_seconds is None:
        draft.sms_fallback_text = None
        return
    app = db.session.get(App, draft.app_id) if draft.app_id else None
    draft.sms_fallback_text = check_fallback(draft.sms_fallback_seconds, draft.sms_fallback_text, draft.text,
                                             draft.open_direct, app)


# ---------------------------------------------------------------------------------------------------- compose


@dataclass
class FallbackPreview:
    """The compose page's SMS section: who would get a fallback, and what it says."""

    subscribers: int = 0
    with_phone: int = 0  # with an E.164 number the SMS provider has not refused before
    text: str = ""
    segments: Segments = field(default_factory=lambda: count_segments(""))
    channel: str | None = None  # the SMS backend's label, None when none is configured
    error: str | None = None

    @property
    def without_phone(self) -> int:
        """Subscribers of the audience that an SMS cannot reach (no number, not E.164, or refused before)."""
        return self.subscribers - self.with_phone


def preview(app_id: int | None, raw_audience: dict[str, Any], device_selection: str, sms_text: str | None,
            push_text: str | None, open_direct: str | None) -> FallbackPreview:
    """Counts for the audience (if nobody opened: the most SMS the fallback can send), the text and its parts."""
    app = db.session.get(App, app_id) if app_id is not None else None
    text = (sms_text or "").strip() or default_text(push_text, open_direct, app)
    channel = current_channel()
    result = FallbackPreview(text=text, segments=count_segments(text),
                             channel=_label(channel) if channel is not None else None)
    try:
        spec = AudienceSpec.from_dict(raw_audience)
    except ServiceError as exc:
        result.error = exc.message
        return result
    if app_id is None:
        result.error = "Choose an app."
        return result
    audience = audience_select(app_id, spec, device_selection).subquery()
    s, b = Subscriber.__table__, SmsBlock.__table__
    reachable = and_(valid_phone(s.c.phone), b.c.subscriber_id.is_(None))  # what the fallback run would text
    counts = db.session.execute(
        select(func.count(func.distinct(s.c.id)), func.count(func.distinct(case((reachable, s.c.id)))))
        .select_from(audience.join(s, s.c.subscriber_key == audience.c.recipient)
                     .outerjoin(b, and_(b.c.subscriber_id == s.c.id, b.c.phone == s.c.phone)))
    ).one()
    result.subscribers, result.with_phone = counts[0] or 0, counts[1] or 0
    return result


def _label(channel: SmsChannel) -> str:
    """The channel's backend label."""
    cls = BACKENDS.get(channel.backend)
    return cls.label if cls else channel.backend


# ----------------------------------------------------------------------------------------- campaign and funnel


def state_counts(campaign_id: int) -> dict[tuple[str, str | None], int]:
    """(state, skip reason) → rows of a campaign (one GROUP BY on the (campaign_id, state) index)."""
    t = SmsMessage.__table__
    rows = db.session.execute(
        select(t.c.state, t.c.skip_reason, func.count()).where(t.c.campaign_id == campaign_id)
        .group_by(t.c.state, t.c.skip_reason)
    )
    return {(state, reason): n for state, reason, n in rows}


def funnel_rows(campaign_id: int) -> list[tuple[str, int]]:
    """The campaign funnel's SMS rows; none when the campaign has no fallback."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or campaign.sms_fallback_seconds is None:
        return []
    counts = state_counts(campaign_id)

    def total(states: tuple[str, ...], reason: str | None = None) -> int:
        return sum(n for (state, why), n in counts.items() if state in states and (reason is None or why == reason))

    skipped = (SmsState.SKIPPED.value,)
    return [
        ("SMS fallback sent", total((SmsState.SENT.value, SmsState.DEBUG.value))),
        ("SMS fallback failed", total((SmsState.ERROR.value,))),
        ("No phone number", total(skipped, "no_phone")),
        ("Opted out", total(skipped, "opted_out")),
        ("Invalid number", total(skipped, "invalid_number")),
    ]


FUNNEL_NOTES = {
    "SMS fallback sent": "one SMS per subscriber who opened none of their pushes in time (counted per subscriber)",
    "SMS fallback failed": "final failures, SMS too old to send, and SMS stopped by a cancel or a stop",
    "No phone number": "non-openers without a phone number: no SMS",
    "Opted out": "opted out before the SMS, or unsubscribed at the SMS provider",
    "Invalid number": "numbers that are not E.164 or that the SMS provider refused (now or before)",
}


def funnel_extra(campaign: Campaign) -> list[Any]:
    """The SMS stages as the analytics funnel's rows (registered in services.analytics.FUNNEL_EXTRAS)."""
    from webadmin.services.analytics import FunnelRow

    return [FunnelRow(label, count, note=FUNNEL_NOTES[label]) for label, count in funnel_rows(campaign.id)]


def register_funnel_stages() -> None:
    """Add the SMS stages to the campaign funnel (page and CSV); the app factory calls this once per app."""
    from webadmin.services import analytics

    if funnel_extra not in analytics.FUNNEL_EXTRAS:
        analytics.FUNNEL_EXTRAS.append(funnel_extra)


@dataclass
class CampaignSms:
    """A campaign's SMS fallback section."""

    window: str
    text: str
    segments: Segments
    due_at: datetime | None  # when the first SMS can go (None before the campaign started)
    done: bool
    counts: list[tuple[str, int]]
    active: int  # rows still waiting, retrying or being sent
    rows: list[tuple[SmsMessage, str | None]]  # the latest rows with their subscriber keys
    stopped_at: datetime | None = None

    @property
    def live(self) -> bool:
        """Whether the section changes by itself (the page polls it)."""
        return self.due_at is not None and (not self.done or self.active > 0)

    @property
    def stoppable(self) -> bool:
        """Whether "Stop SMS fallback" has anything left to stop."""
        return self.stopped_at is None and (not self.done or self.active > 0)


def campaign_sms(campaign: Campaign) -> CampaignSms | None:
    """The SMS fallback section of a campaign's page; None without a fallback."""
    if campaign.sms_fallback_seconds is None:
        return None
    text = campaign.sms_fallback_text or campaign.text
    due_at = campaign.started_at + timedelta(seconds=campaign.sms_fallback_seconds) if campaign.started_at else None
    counts = state_counts(campaign.id)
    active = sum(n for (state, _), n in counts.items() if state in ACTIVE)
    pending = ("SMS fallback waiting", active)
    return CampaignSms(window_label(campaign.sms_fallback_seconds), text, count_segments(text), due_at,
                       campaign.sms_fallback_done_at is not None, [*funnel_rows(campaign.id), pending], active,
                       _latest(SmsMessage.campaign_id == campaign.id), campaign.sms_fallback_stopped_at)


def stop(campaign: Campaign, *, actor: Actor) -> int:
    """Stop a campaign's SMS fallback, whatever the campaign's status (a sent campaign cannot be cancelled, and its
    fallback is still to come): no row is made any more, waiting and retrying rows end as ERROR "fallback
    cancelled" (an SMS already handed to the provider finishes). Audited and committed; returns the rows ended."""
    if campaign.sms_fallback_seconds is None:
        raise ServiceError("This campaign has no SMS fallback.", code="not_found")
    section = campaign_sms(campaign)
    if section is None or not section.stoppable:
        raise ServiceError("The SMS fallback is already stopped or finished: nothing is left to stop.",
                           code="conflict")
    now, c = utcnow(), Campaign.__table__
    stopped = db.session.execute(  # compare-and-set: of two clicks, one stops; updated_at stays the campaign's
        update(c).where(c.c.id == campaign.id, c.c.sms_fallback_stopped_at.is_(None))
        .values(sms_fallback_stopped_at=now, sms_fallback_done_at=func.coalesce(c.c.sms_fallback_done_at, now),
                updated_at=c.c.updated_at)
    ).rowcount
    if not stopped:
        db.session.rollback()
        raise ServiceError("The SMS fallback is already stopped.", code="conflict")
    ended = end_pending(SmsMessage.campaign_id == campaign.id, FALLBACK_CANCELLED, now)
    audit.record("campaign.sms_fallback_stop", actor=actor, obj=("campaign", campaign.id), rows_ended=ended,
                 campaign_status=campaign.status)
    db.session.commit()
    db.session.expire(campaign)
    return ended


def _latest(condition: Any) -> list[tuple[SmsMessage, str | None]]:
    """The newest SMS rows matching a condition, with subscriber keys."""
    query = (select(SmsMessage, Subscriber.subscriber_key)
             .outerjoin(Subscriber, Subscriber.id == SmsMessage.subscriber_id)
             .where(condition).order_by(SmsMessage.id.desc()).limit(ROWS_SHOWN))
    return [(row[0], row[1]) for row in db.session.execute(query)]


def subscriber_sms(subscriber_id: int) -> list[tuple[SmsMessage, Campaign]]:
    """A subscriber's SMS fallbacks, newest first, with their campaigns."""
    query = (select(SmsMessage, Campaign).join(Campaign, Campaign.id == SmsMessage.campaign_id)
             .where(SmsMessage.subscriber_id == subscriber_id).order_by(SmsMessage.id.desc()).limit(ROWS_SHOWN))
    return [(row[0], row[1]) for row in db.session.execute(query)]


def subscriber_block(subscriber_id: int) -> SmsBlock | None:
    """The block on a subscriber's number, while it applies (the subscriber still has the refused number)."""
    query = (select(SmsBlock).join(Subscriber, and_(Subscriber.id == SmsBlock.subscriber_id,
                                                     Subscriber.phone == SmsBlock.phone))
             .where(SmsBlock.subscriber_id == subscriber_id))
    return db.session.scalar(query)


def clear_block(subscriber_id: int, *, actor: Actor) -> bool:
    """Allow SMS to a subscriber's number again (e.g. they texted START); audited and committed. False when there
    was no block."""
    block = db.session.get(SmsBlock, subscriber_id)
    if block is None:
        return False
    reason = block.reason
    db.session.execute(delete(SmsBlock).where(SmsBlock.subscriber_id == subscriber_id))
    audit.record("subscriber.sms_block_clear", actor=actor, obj=("subscriber", subscriber_id), reason=reason)
    db.session.commit()
    return True
