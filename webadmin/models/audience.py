"""Subscribers, their devices, and groups of subscribers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Computed, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webadmin.extensions import db
from webadmin.models.types import UTCDateTime, utcnow

DEVICE_STATUSES = ("active", "invalid", "unsubscribed")


class Subscriber(db.Model):
    """A person who receives pushes, keyed by `subscriber_key` (in practice their email)."""

    __tablename__ = "subscribers"
    __table_args__ = (
        # INCLUDE id (PostgreSQL): pages in key order, with a filter checked per row, walk this index alone.
        UniqueConstraint("subscriber_key", name="uq_subscribers_subscriber_key", postgresql_include=["id"]),
        # Prefix search (`LIKE 'abc%'`): PostgreSQL uses a btree for LIKE only with text_pattern_ops unless the
        # database collation is "C"; SQLite searches with a range (>= 'abc' AND < 'abd') on these same indexes.
        # Both INCLUDE id on PostgreSQL (SQLite's indexes carry the rowid anyway): a search reads its candidates
        # (id, key) from the indexes alone, without visiting the table for each match.
        Index(
            "ix_subscribers_subscriber_key_pattern",
            "subscriber_key",
            postgresql_ops={"subscriber_key": "text_pattern_ops"},
            postgresql_include=["id"],
        ),
        # With the key in the index, name matches can be put in key order without reading the table.
        Index(
            "ix_subscribers_display_name_lower_key",
            "display_name_lower",
            "subscriber_key",
            postgresql_ops={"display_name_lower": "text_pattern_ops"},
            postgresql_include=["id"],
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_key: Mapped[str] = mapped_column(String(254))
    display_name: Mapped[str | None] = mapped_column(String(200), index=True)
    # Kept by the database for case-insensitive name search, whoever writes the row (ORM, bulk or raw SQL).
    display_name_lower: Mapped[str | None] = mapped_column(String(200), Computed("lower(display_name)", persisted=True))
    locale: Mapped[str | None] = mapped_column(String(35))
    time_zone: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(16))  # E.164
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    opted_out: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    devices: Mapped[list[Device]] = relationship(back_populates="subscriber")


class Device(db.Model):
    """An app install that can receive pushes: a provider token on one platform of one app."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("app_id", "token", name="uq_devices_app_id_token"),
        Index("ix_devices_subscriber_status", "subscriber_id", "status"),
        # An app's active devices in id order with what the audience query reads (covering): materialising reads
        # it without touching the table and inserts messages in device order without a sort.
        Index("ix_devices_audience", "app_id", "status", "id", "subscriber_id", "platform"),
        # Who has a device in a status/platform: answers the audience filters without reading the table.
        Index("ix_devices_status_platform_subscriber", "status", "platform", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(8))  # android | ios | web
    token: Mapped[str] = mapped_column(String(1024))
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default="active")
    invalid_reason: Mapped[str | None] = mapped_column(String(200))
    invalidated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    app_version: Mapped[str | None] = mapped_column(String(40))
    locale: Mapped[str | None] = mapped_column(String(35))
    time_zone: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    subscriber: Mapped[Subscriber | None] = relationship(back_populates="devices")


class Group(db.Model):
    """A named set of subscribers ("key customers", "owners of the Frania washer")."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class GroupMember(db.Model):
    """Membership of a subscriber in a group."""

    __tablename__ = "group_members"
    __table_args__ = (Index("ix_group_members_subscriber_id", "subscriber_id"),)

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PendingMemberList(db.Model):
    """Keys matched by a group preview, waiting for the same user's confirm (in the database, so the confirm
    may reach any web server); the token that names it is kept only as its SHA-256."""

    __tablename__ = "pending_member_lists"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    keys: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
