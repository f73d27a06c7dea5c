"""Messages: one push to one device (the pymess PushNotificationMessage), and their related objects."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import DDL, JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint, event, text
from sqlalchemy.orm import Mapped, mapped_column

from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign
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
    # No foreign keys on campaign_id and device_id: triggers on campaigns and devices (PARENT_TRIGGERS_DDL) do what
    # their ON DELETE did, without an RI check per materialised row.
    campaign_id: Mapped[int | None] = mapped_column()
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


# Deleting a campaign deletes its messages (as ON DELETE CASCADE did; their related objects follow through the
# foreign key of message_related_objects) and deleting a device leaves its messages with device_id NULL (as ON
# DELETE SET NULL did), from triggers on campaigns and devices: a foreign key checks every inserted row, which was
# about half of materialising on PostgreSQL (docs/benchmarks.md). The rows materialise inserts come from a
# join on devices in the same statement, for a campaign it has locked, so they reference existing rows by
# construction; what remains is a deletion while a campaign is being materialised:
# - the campaign: materialise reads it `FOR KEY SHARE` (start() has also updated it), so a DELETE waits for the
#   commit and its trigger, whose DELETE takes a new snapshot (READ COMMITTED, a volatile function), sees the new
#   messages; a deletion that came first leaves materialise no campaign, and it refuses;
# - a device of its app: materialise holds DEVICE_LOCK for the app shared (`pg_advisory_xact_lock_shared`) from
#   before its INSERT to its commit, and the trigger takes it exclusively before its UPDATE, which then sees the
#   committed messages; a deletion that came first makes materialise wait, and its INSERT then no longer sees the
#   device.
# SQLite has one writer at a time, so neither can interleave there.
DEVICE_LOCK = 0x6D736773  # 'msgs': the first key of the advisory lock; the second is the app id

PARENT_TRIGGERS_DDL = {
    "postgresql": [
        """CREATE OR REPLACE FUNCTION messages_campaign_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM messages WHERE campaign_id IN (SELECT id FROM deleted_campaigns);
    RETURN NULL;
END
$$""",
        "DROP TRIGGER IF EXISTS trg_campaigns_messages_campaign_id ON campaigns",
        "CREATE TRIGGER trg_campaigns_messages_campaign_id AFTER DELETE ON campaigns "
        "REFERENCING OLD TABLE AS deleted_campaigns FOR EACH STATEMENT EXECUTE FUNCTION messages_campaign_deleted()",
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
        "DROP TRIGGER IF EXISTS trg_campaigns_messages_campaign_id",
        "CREATE TRIGGER trg_campaigns_messages_campaign_id AFTER DELETE ON campaigns FOR EACH ROW "
        "BEGIN DELETE FROM messages WHERE campaign_id = old.id; END",
        "DROP TRIGGER IF EXISTS trg_devices_messages_device_id",
        "CREATE TRIGGER trg_devices_messages_device_id AFTER DELETE ON devices FOR EACH ROW "
        "BEGIN UPDATE messages SET device_id = NULL WHERE device_id = old.id; END",
    ],
}
PARENT_TRIGGERS_DROP = {
    "postgresql": [
        "DROP TRIGGER IF EXISTS trg_campaigns_messages_campaign_id ON campaigns",
        "DROP FUNCTION IF EXISTS messages_campaign_deleted()",
        "DROP TRIGGER IF EXISTS trg_devices_messages_device_id ON devices",
        "DROP FUNCTION IF EXISTS messages_device_deleted()",
    ],
    "sqlite": [
        "DROP TRIGGER IF EXISTS trg_campaigns_messages_campaign_id",
        "DROP TRIGGER IF EXISTS trg_devices_messages_device_id",
    ],
}


def _run(statements: dict[str, list[str]], connection: Any) -> None:
    for statement in statements.get(connection.dialect.name, []):
        connection.execute(DDL(statement.replace("%", "%%")))


def _create_parent_triggers(target: Any, connection: Any, **_: Any) -> None:
    """With the messages table (create_all, tests): the triggers the migration creates."""
    _run(PARENT_TRIGGERS_DDL, connection)


def _drop_parent_triggers(target: Any, connection: Any, **_: Any) -> None:
    """With the messages table: a trigger left behind would fail every later deletion of a campaign or device."""
    _run(PARENT_TRIGGERS_DROP, connection)


# Without foreign keys nothing orders the tables: the triggers need campaigns and devices first (and to go last).
Message.__table__.add_is_dependent_on(Campaign.__table__)
Message.__table__.add_is_dependent_on(Device.__table__)
event.listen(Message.__table__, "after_create", _create_parent_triggers)
event.listen(Message.__table__, "after_drop", _drop_parent_triggers)
