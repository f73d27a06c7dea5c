"""Campaigns: one push to an audience, with its status and progress counters."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Mapped, mapped_column

from webadmin.extensions import db
from webadmin.models.types import UTCDateTime, utcnow


class CampaignStatus(enum.StrEnum):
    """Where a campaign is in its life; changes only through services.campaigns.transition."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"
    FAILED = "failed"


SOURCES = ("adhoc", "offer", "social", "api")
COUNTERS = ("targeted", "sent", "failed", "retrying", "invalid_tokens", "opened", "cancelled")


class Campaign(db.Model):
    """A push to an audience. `audience` is a spec: {"type": all|keys|groups|platforms, …}."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=lambda: str(uuid.uuid4()))
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    title: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    open_direct: Mapped[str | None] = mapped_column(String(2048))
    data: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    image_url: Mapped[str | None] = mapped_column(String(2048))
    ttl: Mapped[int | None] = mapped_column()
    audience: Mapped[dict[str, Any]] = mapped_column(JSON, default=lambda: {"type": "all"})
    source: Mapped[str] = mapped_column(String(16), default="adhoc", index=True)
    related_type: Mapped[str | None] = mapped_column(String(40))
    related_id: Mapped[str | None] = mapped_column(String(64))
    tag: Mapped[str | None] = mapped_column(String(64))
    template_slug: Mapped[str | None] = mapped_column(String(100))
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    schedule_time_zone: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.DRAFT.value, index=True)
    status_reason: Mapped[str | None] = mapped_column(String(500))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_by: Mapped[str | None] = mapped_column(String(254))
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # SMS fallback (webadmin/sms/fallback.py): subscribers who open none of their pushes within this many seconds
    # get one SMS with this text; done_at is set once no subscriber can become due any more; stopped_at when a
    # marketer stopped the fallback (services.sms_fallback.stop): nothing more is made or sent.
    sms_fallback_seconds: Mapped[int | None] = mapped_column()
    sms_fallback_text: Mapped[str | None] = mapped_column(Text)
    sms_fallback_done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sms_fallback_stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Progress counters, kept current by the engine in the same transaction as the rows they count.
    targeted: Mapped[int] = mapped_column(default=0)
    sent: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    retrying: Mapped[int] = mapped_column(default=0)
    invalid_tokens: Mapped[int] = mapped_column(default=0)
    opened: Mapped[int] = mapped_column(default=0)
    cancelled: Mapped[int] = mapped_column(default=0)
    # Sent on a claim after an earlier claim of the same message left no outcome (a worker killed mid-batch or a
    # lost lease): that earlier claim may have delivered it too; its UUID collapses the two on the device.
    possibly_resent: Mapped[int] = mapped_column(default=0, server_default=sql_text("0"))

    @property
    def status_enum(self) -> CampaignStatus:
        """The status as an enum."""
        return CampaignStatus(self.status)

    @property
    def done(self) -> int:
        """Messages that reached a final state."""
        return self.sent + self.failed + self.cancelled

    @property
    def progress(self) -> float:
        """Share of targeted messages in a final state, 0…1."""
        return 1.0 if self.targeted == 0 else min(1.0, self.done / self.targeted)


class Channel(db.Model):
    """How an app reaches one platform: a backend type plus its (encrypted) credentials."""

    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(8))
    backend: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(120))
    credentials_encrypted: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    error: Mapped[str | None] = mapped_column(String(500))
    error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AppSendState(enum.StrEnum):
    """Where a campaign's one messageApp request to a Marketing Cloud message stands (engine.app_sends)."""

    SENDING = "sending"  # claimed: a worker is sending it now (or died doing so: then UNKNOWN once its lease ends)
    SENT = "sent"  # accepted; provider_message_id is its tokenId
    RETRY = "retry"  # refused retryably (429, 5xx, unreachable): claimable again from next_attempt_at
    REFUSED = "refused"  # credentials or payload refused: the campaign paused; claimable again after a resume
    FAILED = "failed"  # retried up to the attempt ceiling: not sent
    UNKNOWN = "unknown"  # no answer recorded (lost worker, timeout, reset): maybe sent, never sent again


class CampaignAppSend(db.Model):
    """A campaign-level claim of one messageApp ("all users") request: one row per (campaign, target), where the
    target is a Marketing Cloud client id + MobilePush message, so two channels of the same message share it.

    The row is written and committed before the request goes out, which makes the request go out at most once
    across every worker: INSERT … ON CONFLICT DO NOTHING takes the first claim, a conditional UPDATE the re-claim
    of a retryable one; `claim_token` fences the claimer's write of the outcome.
    """

    __tablename__ = "campaign_app_sends"
    __table_args__ = (UniqueConstraint("campaign_id", "target", name="uq_campaign_app_sends_campaign_id_target"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16))
    claim_token: Mapped[str] = mapped_column(String(36))
    claimed_by: Mapped[str] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(default=1)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
