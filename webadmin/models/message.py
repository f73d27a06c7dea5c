"""Messages: one push to one device (the pymess PushNotificationMessage), and their related objects."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import DDL, JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint, event, text
from sqlalchemy.orm import Mapped, mapped_column

from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.types import UTCDateTime, utcnow


class MessageState(enum.StrEnum):
    """pymess states."""

    WAITING = "WAITING"
    SENT = "SENT"
    ERROR = "ERROR"
    ERROR_RETRY = "ERROR_RETRY"
    DEBUG = "DEBUG"


PENDING_STATES = (MessageState.WAITING.value, MessageState.ERROR_RETRY.value)
_PENDING_SQL = text("state IN ('WAITING', 'ERROR_RETRY')")
_OPENED_SQL = text("opened_at IS NOT NULL")

# Message ids are 64-bit on PostgreSQL: at 1M-message campaigns a 32-bit key runs out after ~2,147 of them. SQLite
# keeps INTEGER, its 64-bit rowid alias (a BIGINT key there would be a separate column without autoincrement).
MESSAGE_ID = BigInteger().with_variant(Integer, "sqlite")
MAX_MESSAGE_ID = 2**63 - 1


class Message(db.Model):
    """One push to one device. Campaign messages take text/title/url from their campaign (content is NULL)."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("campaign_id", "device_id", name="uq_messages_campaign_id_device_id"),
        # Only pending rows are in this index, so claiming stays cheap however many rows were sent.
        Index("ix_messages_pending", "campaign_id", "id", sqlite_where=_PENDING_SQL, postgresql_where=_PENDING_SQL),
        Index("ix_messages_campaign_state", "campaign_id", "state"),
        # The campaign page's message log pages a campaign in id order: without it, a sort of the whole campaign.
        Index("ix_messages_campaign_id_id", "campaign_id", "id"),
        # Who opened a push of a campaign, by subscriber key (the SMS fallback's check before it sends). Only opened
        # rows are in it, so materialising a campaign writes nothing here: a full index on `recipient` was written
        # in key order, i.e. at random places, and cost a fifth of materialising 1M messages (docs/benchmarks.md).
        Index(
            "ix_messages_opened_recipient",
            "campaign_id",
            "recipient",
            sqlite_where=_OPENED_SQL,
            postgresql_where=_OPENED_SQL,
        ),
    )

    id: Mapped[int] = mapped_column(MESSAGE_ID, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)  # from campaign and device: audience.message_uuid
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    # No foreign key: a deleted device's messages get device_id NULL from a trigger on devices (DEVICE_DELETED_DDL);
    # an RI check per inserted row was the largest single cost of materialising (docs/benchmarks.md).
    device_id: Mapped[int | None] = mapped_column(index=True)
    recipient: Mapped[str | None] = mapped_column(String(254))
    content: Mapped[str | None] = mapped_column(Text)
    heading: Mapped[str | None] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(String(2048))
    template_slug: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(12), default=MessageState.WAITING.value)
    backend: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    # Set with a final ERROR (not for cancellations): one of models.analytics.FAILURE_CLASSES, for the funnel.
    failure_class: Mapped[str | None] = mapped_column(String(16))
    extra_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    extra_sender_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    tag: Mapped[str | None] = mapped_column(String(64))
    number_of_send_attempts: Mapped[int] = mapped_column(default=0)
    retry_sending: Mapped[bool] = mapped_column(default=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # only when the device reported it
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, onupdate=utcnow)


class MessageRelatedObject(db.Model):
    """An object a message is about (pymess generic relation): type name + id."""

    __tablename__ = "message_related_objects"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(MESSAGE_ID, ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    content_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Template(db.Model):
    """A push template (pymess AbstractPushNotificationTemplate): body rendered in a sandbox."""

    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    title: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    open_direct: Mapped[str | None] = mapped_column(String(2048))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# What deletes devices leaves their messages with device_id NULL, as `ON DELETE SET NULL` did. The rows materialise
# inserts come from a join on devices in the same statement, so they reference existing devices by construction;
# what remains is a device deleted while a campaign of its app is being materialised. PostgreSQL: materialise holds
# DEVICE_LOCK for the app shared (`pg_advisory_xact_lock_shared`) from before its INSERT to its commit, and the
# trigger takes it exclusively before its UPDATE, which (READ COMMITTED: a new snapshot per statement) then sees the
# committed messages; a deletion that came first makes materialise wait, and its INSERT then no longer sees the
# device. SQLite has one writer at a time, so the two cannot interleave.
DEVICE_LOCK = 0x6D736773  # 'msgs': the first key of the advisory lock; the second is the app id

DEVICE_DELETED_DDL = {
    "postgresql": [
        f"""CREATE OR REPLACE FUNCTION messages_device_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({DEVICE_LOCK}, app_id)
        FROM (SELECT DISTINCT app_id FROM deleted_devices ORDER BY app_id) AS apps;
    UPDATE messages SET device_id = NULL WHERE device_id IN (SELECT id FROM deleted_devices);
    RETURN NULL;
END
$$""",
        "DROP TRIGGER IF EXISTS trg_devices_messages_device_id ON devices",
        "CREATE TRIGGER trg_devices_messages_device_id AFTER DELETE ON devices "
        "REFERENCING OLD TABLE AS deleted_devices FOR EACH STATEMENT EXECUTE FUNCTION messages_device_deleted()",
    ],
    "sqlite": [
        "DROP TRIGGER IF EXISTS trg_devices_messages_device_id",
        "CREATE TRIGGER trg_devices_messages_device_id AFTER DELETE ON devices FOR EACH ROW "
        "BEGIN UPDATE messages SET device_id = NULL WHERE device_id = old.id; END",
    ],
}


def _create_device_trigger(target: Any, connection: Any, **_: Any) -> None:
    """With the messages table (create_all, tests): the trigger the migration creates."""
    for statement in DEVICE_DELETED_DDL.get(connection.dialect.name, []):
        connection.execute(DDL(statement.replace("%", "%%")))


def _drop_device_trigger(target: Any, connection: Any, **_: Any) -> None:
    """With the messages table: a trigger left on devices would fail every later device deletion."""
    if connection.dialect.name == "postgresql":
        connection.execute(DDL("DROP TRIGGER IF EXISTS trg_devices_messages_device_id ON devices"))
        connection.execute(DDL("DROP FUNCTION IF EXISTS messages_device_deleted()"))
    elif connection.dialect.name == "sqlite":
        connection.execute(DDL("DROP TRIGGER IF EXISTS trg_devices_messages_device_id"))


# Without the foreign key nothing orders the two tables: the trigger needs devices to exist first (and to go last).
Message.__table__.add_is_dependent_on(Device.__table__)
event.listen(Message.__table__, "after_create", _create_device_trigger)
event.listen(Message.__table__, "after_drop", _drop_device_trigger)
