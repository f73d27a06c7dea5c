"""SMS fallback: the install's SMS channel, and one SMS row per subscriber and campaign."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from webadmin.extensions import db
from webadmin.models.types import UTCDateTime, utcnow


class SmsState(enum.StrEnum):
    """Like a push message's states, plus SENDING (handed to the provider, outcome not yet recorded) and
    SKIPPED (not sent on purpose: no phone number, opted out, or a number the provider refused)."""

    WAITING = "WAITING"
    SENDING = "SENDING"
    SENT = "SENT"
    ERROR = "ERROR"
    ERROR_RETRY = "ERROR_RETRY"
    DEBUG = "DEBUG"
    SKIPPED = "SKIPPED"


SMS_PENDING_STATES = (SmsState.WAITING.value, SmsState.ERROR_RETRY.value)
# no_phone, opted_out and invalid_number are counted in the funnel; opened (a push opened before the SMS went) and
# deleted (the subscriber was deleted before it went) are shown on the rows only.
SKIP_REASONS = ("no_phone", "opted_out", "invalid_number", "opened", "deleted")
BLOCK_REASONS = ("invalid_number", "opted_out")
# Rows the fallback run still works on: only these are in the partial index, however many were sent.
_ACTIVE_SQL = text("state IN ('WAITING', 'ERROR_RETRY', 'SENDING')")


class SmsChannel(db.Model):
    """How SMS leave this install: a backend type, its encrypted credentials and the sender name (one row)."""

    __tablename__ = "sms_channels"

    id: Mapped[int] = mapped_column(primary_key=True)
    backend: Mapped[str] = mapped_column(String(32))
    sender: Mapped[str | None] = mapped_column(String(32))
    credentials_encrypted: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Set when the provider refused the credentials: nothing is sent until an admin saves or tests the channel.
    halted: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(String(500))
    error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SmsMessage(db.Model):
    """One fallback SMS: at most one per (campaign, subscriber), whatever the number of devices."""

    __tablename__ = "sms_messages"
    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id", name="uq_sms_messages_campaign_id_subscriber_id"),
        Index("ix_sms_messages_active", "id", sqlite_where=_ACTIVE_SQL, postgresql_where=_ACTIVE_SQL),
        Index("ix_sms_messages_campaign_state", "campaign_id", "state"),
        Index("ix_sms_messages_subscriber_id", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)  # the provider's idempotency key (SMSAPI idx)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"))
    phone: Mapped[str | None] = mapped_column(String(16))  # the number when the row was made (E.164)
    state: Mapped[str] = mapped_column(String(12), default=SmsState.WAITING.value)
    skip_reason: Mapped[str | None] = mapped_column(String(16))  # one of SKIP_REASONS when SKIPPED
    backend: Mapped[str | None] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SmsBlock(db.Model):
    """A subscriber's number the SMS provider refused (invalid, or the recipient replied STOP): no fallback goes to
    it again. It applies while the subscriber's phone is still `phone`, so a changed number lifts it wherever the
    change comes from (API, CSV import, console)."""

    __tablename__ = "sms_blocks"

    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True)
    phone: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(16))  # one of BLOCK_REASONS
    detail: Mapped[str | None] = mapped_column(String(500))  # the provider's answer (redacted)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    blocked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
