"""Analytics rollups: counts kept current in the same transaction as the rows they count, so pages never scan
the messages table. `flask analytics rebuild` recomputes them from the raw rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from webadmin.extensions import db
from webadmin.models.types import UTCDateTime

# Why a message finally failed, in the funnel's words (messages.failure_class holds one of these).
FAILURE_CLASSES = ("invalid_token", "quota", "auth", "payload", "other")
# The counters every hourly rollup row carries.
HOURLY_COUNTS = ("sent", "failed", "opened", "received")


class CampaignRollup(db.Model):
    """One campaign's funnel: accepted by the provider, final failures by class, opens, device receipts.

    `targeted` is the campaign's own counter (set when its messages are made); cancellations are on the campaign.
    """

    __tablename__ = "campaign_rollups"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    sent: Mapped[int] = mapped_column(default=0)
    failed_invalid_token: Mapped[int] = mapped_column(default=0)
    failed_quota: Mapped[int] = mapped_column(default=0)
    failed_auth: Mapped[int] = mapped_column(default=0)
    failed_payload: Mapped[int] = mapped_column(default=0)
    failed_other: Mapped[int] = mapped_column(default=0)
    opened: Mapped[int] = mapped_column(default=0)
    received: Mapped[int] = mapped_column(default=0)

    @property
    def failed(self) -> int:
        """Final failures of every class."""
        return sum(getattr(self, f"failed_{name}") for name in FAILURE_CLASSES)


class CampaignHourlyRollup(db.Model):
    """A campaign's counts per UTC hour (sends when accepted, failures when final, opens when opened)."""

    __tablename__ = "campaign_hourly_rollups"
    __table_args__ = (Index("ix_campaign_hourly_rollups_hour", "hour"),)

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    sent: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    opened: Mapped[int] = mapped_column(default=0)
    received: Mapped[int] = mapped_column(default=0)


class HourlyRollup(db.Model):
    """All traffic per UTC hour × platform × campaign source: what the dashboard and the charts read."""

    __tablename__ = "hourly_rollups"

    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    platform: Mapped[str] = mapped_column(String(8), primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    sent: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    opened: Mapped[int] = mapped_column(default=0)
    received: Mapped[int] = mapped_column(default=0)
