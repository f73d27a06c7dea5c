"""SMS fallback as the console sees it: the compose rules and preview, the campaign section, the subscriber's SMS
and the funnel rows. Reads are set-based (GROUP BY / COUNT), never a loop over rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select

from webadmin.extensions import db
from webadmin.models.audience import Subscriber
from webadmin.models.campaign import Campaign
from webadmin.models.sms import SmsChannel, SmsMessage, SmsState
from webadmin.sending.audience import AudienceSpec, audience_select
from webadmin.services import ServiceError
from webadmin.sms import BACKENDS
from webadmin.sms.fallback import current_channel
from webadmin.sms.segments import Segments, count_segments

MIN_WINDOW_SECONDS = 60  # the periodic run's interval; shorter would not be kept anyway
MAX_WINDOW_SECONDS = 72 * 3600  # later than three days an SMS about a push is stale
MAX_PARTS = 6  # a longer text costs six SMS per subscriber; SMSAPI refuses more parts by default
ROWS_SHOWN = 50
ACTIVE = (SmsState.WAITING.value, SmsState.ERROR_RETRY.value, SmsState.SENDING.value)


def default_text(push_text: str | None, open_direct: str | None) -> str:
    """The push text, plus the deep link when it is an https URL (an app-scheme link opens nothing from an SMS)."""
    text = (push_text or "").strip()
    link = (open_direct or "").strip()
    if link.lower().startswith("https://"):
        return f"{text} {link}".strip()
    return text


def window_label(seconds: int) -> str:
    """A window for people: 30 minutes, 2 hours, 90 minutes."""
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = max(1, seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def check_fallback(seconds: int | None, sms_text: str | None, push_text: str | None,
                   open_direct: str | None) -> str:
    """The SMS text to store (the default when blank), or a ServiceError naming the field."""
    if seconds is None or not MIN_WINDOW_SECONDS <= seconds <= MAX_WINDOW_SECONDS:
        raise ServiceError(f"Choose a window between {window_label(MIN_WINDOW_SECONDS)} and "
                           f"{window_label(MAX_WINDOW_SECONDS)}.", field="sms_after")
    text = (sms_text or "").strip() or default_text(push_text, open_direct)
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
    draft.sms_fallback_text = check_fallback(draft.sms_fallback_seconds, draft.sms_fallback_text, draft.text,
                                             draft.open_direct)


# ---------------------------------------------------------------------------------------------------- compose


@dataclass
class FallbackPreview:
    """The compose page's SMS section: who would get a fallback, and what it says."""

    subscribers: int = 0
    with_phone: int = 0
    text: str = ""
    segments: Segments = field(default_factory=lambda: count_segments(""))
    channel: str | None = None  # the SMS backend's label, None when none is configured
    error: str | None = None

    @property
    def without_phone(self) -> int:
        """Subscribers of the audience that an SMS cannot reach."""
        return self.subscribers - self.with_phone


def preview(app_id: int | None, raw_audience: dict[str, Any], device_selection: str, sms_text: str | None,
            push_text: str | None, open_direct: str | None) -> FallbackPreview:
    """Counts for the audience (if nobody opened: the most SMS the fallback can send), the text and its parts."""
    text = (sms_text or "").strip() or default_text(push_text, open_direct)
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
    s = Subscriber.__table__
    has_phone = and_(s.c.phone.is_not(None), s.c.phone != "")
    counts = db.session.execute(
        select(func.count(func.distinct(s.c.id)), func.count(func.distinct(case((has_phone, s.c.id)))))
        .select_from(audience.join(s, s.c.subscriber_key == audience.c.recipient))
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
    "SMS fallback failed": "final failures and SMS stopped by a cancel",
    "No phone number": "non-openers without a phone number: no SMS",
    "Opted out": "opted out before the SMS, or unsubscribed at the SMS provider",
    "Invalid number": "numbers the SMS provider refused",
}


def funnel_extra(campaign: Campaign) -> list[Any]:
    """The SMS stages as the analytics funnel's rows (registered in services.analytics.FUNNEL_EXTRAS)."""
    from webadmin.services.analytics import FunnelRow

    return [FunnelRow(label, count, note=FUNNEL_NOTES[label]) for label, count in funnel_rows(campaign.id)]


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

    @property
    def live(self) -> bool:
        """Whether the section changes by itself (the page polls it)."""
        return self.due_at is not None and (not self.done or self.active > 0)


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
                       _latest(SmsMessage.campaign_id == campaign.id))


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
