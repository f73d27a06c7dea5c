"""The pushes a subscriber received: their devices' messages, newest first, in keyset pages for the subscriber page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Device, Subscriber
from webadmin.models.campaign import Campaign
from webadmin.models.message import MAX_MESSAGE_ID, Message

PAGE_SIZE = 20


@dataclass
class MessagePage:
    """Messages newest first; `older` is the cursor of the next (older) page, `before` the cursor this page used."""

    rows: list[Row[Any]]
    older: int | None = None
    before: int | None = None


def cursor(raw: str | None) -> int | None:
    """A `before` cursor from the query string: a message id, or None when absent or not one."""
    if not raw or not raw.isdecimal() or len(raw) > 19:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_MESSAGE_ID else None


def recent_messages(subscriber: Subscriber, *, before: int | None = None, size: int = PAGE_SIZE) -> MessagePage:
    """The subscriber's pushes through their devices (ix_messages_device_id), older than `before`.

    Only messages addressed to this subscriber count: a token that moved from another subscriber keeps its
    earlier messages, but those were the other subscriber's (`recipient` is the key at sending time).
    """
    query = (
        select(
            Message.id,
            Message.state,
            Message.sent_at,
            Message.opened_at,
            Message.error,
            Message.heading,
            Message.content,
            Message.campaign_id,
            Campaign.title.label("campaign_title"),
            Campaign.text.label("campaign_text"),
            Device.platform,
            App.name.label("app"),
        )
        .join(Device, Device.id == Message.device_id)
        .join(App, App.id == Device.app_id)
        .outerjoin(Campaign, Campaign.id == Message.campaign_id)
        .where(Device.subscriber_id == subscriber.id, Message.recipient == subscriber.subscriber_key)
        .order_by(Message.id.desc())
        .limit(size + 1)
    )
    if before is not None:
        query = query.where(Message.id < before)
    rows = list(db.session.execute(query))
    older = rows[size - 1].id if len(rows) > size else None
    return MessagePage(rows[:size], older=older, before=before)
