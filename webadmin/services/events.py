"""Device events (received, opened): idempotent, counted once per message, counters in the same transaction."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update

from webadmin.extensions import db
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.types import utcnow

EVENT_TYPES = ("received", "opened")


@dataclass(frozen=True)
class DeviceEvent:
    """One report from a device about one message (by UUID)."""

    message_uuid: str
    type: str
    at: datetime | None = None


@dataclass
class EventReport:
    """What a batch of events did."""

    counted: int = 0
    duplicates: int = 0
    unknown: list[str] = field(default_factory=list)


def _known(uuids: list[str], app_id: int | None) -> dict[str, tuple[int, int | None]]:
    """uuid → (message id, campaign id) for messages of this app (any app when app_id is None)."""
    query = select(Message.uuid, Message.id, Message.campaign_id).where(Message.uuid.in_(uuids))
    if app_id is not None:
        query = query.join(Campaign, Campaign.id == Message.campaign_id).where(Campaign.app_id == app_id)
    return {row.uuid: (row.id, row.campaign_id) for row in db.session.execute(query)}


def record_events(events: list[DeviceEvent], *, app_id: int | None) -> EventReport:
    """Record events; an open counts once per message however often it is reported."""
    report = EventReport()
    known = _known(list({e.message_uuid for e in events}), app_id)
    opened_per_campaign: Counter[int] = Counter()
    now = utcnow()
    for event in events:
        if event.message_uuid not in known:
            report.unknown.append(event.message_uuid)
            continue
        message_id, campaign_id = known[event.message_uuid]
        column = Message.opened_at if event.type == "opened" else Message.received_at
        changed = db.session.execute(
            update(Message).where(Message.id == message_id, column.is_(None)).values({column.key: event.at or now})
        ).rowcount
        if changed and event.type == "opened" and campaign_id is not None:
            opened_per_campaign[campaign_id] += 1
        report.counted += changed
        report.duplicates += 1 - changed
    for campaign_id, opened in opened_per_campaign.items():
        db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(opened=Campaign.opened + opened))
    db.session.commit()
    return report
