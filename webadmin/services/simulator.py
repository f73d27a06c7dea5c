"""Simulated devices: creation, their inbox (messages the Simulator delivered), and taps."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Device, Subscriber
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.providers.simulator import TOKEN_PREFIX
from webadmin.services import ServiceError
from webadmin.services.audience import DeviceRegistration, register_device
from webadmin.services.events import DeviceEvent, EventReport, record_events

INBOX_SIZE = 30


@dataclass(frozen=True)
class Notification:
    """A push as the simulated phone shows it."""

    uuid: str
    title: str | None
    text: str
    image_url: str | None
    open_direct: str | None
    sent_at: datetime | None
    opened_at: datetime | None


def simulated_devices(limit: int = 200) -> list[tuple[Device, str | None]]:
    """Simulated devices, newest first, with their subscriber keys."""
    rows = db.session.execute(
        select(Device, Subscriber.subscriber_key)
        .outerjoin(Subscriber, Subscriber.id == Device.subscriber_id)
        .where(Device.token.startswith(TOKEN_PREFIX))
        .order_by(Device.id.desc())
        .limit(limit)
    )
    return [(row[0], row[1]) for row in rows]


def create_device(app: App, platform: str, subscriber_key: str | None) -> int:
    """A new simulated install (registered like a real app would, through the device registry)."""
    token = f"{TOKEN_PREFIX}{platform}-{secrets.token_hex(8)}"
    register_device(app, token, DeviceRegistration(platform=platform, subscriber_key=subscriber_key or None))
    return db.session.scalar(select(Device.id).where(Device.app_id == app.id, Device.token == token))


def simulated_device(device_id: int) -> Device:
    """A simulated device, or a clear error for anything else."""
    device = db.session.get(Device, device_id)
    if device is None or not device.token.startswith(TOKEN_PREFIX):
        raise ServiceError("No such simulated device.", code="not_found")
    return device


def inbox(device: Device) -> list[Notification]:
    """What the Simulator delivered to this device, newest first."""
    rows = db.session.execute(
        select(Message, Campaign)
        .join(Campaign, Campaign.id == Message.campaign_id)
        .where(Message.device_id == device.id, Message.backend == "simulator", Message.state == "SENT")
        .order_by(Message.id.desc())
        .limit(INBOX_SIZE)
    )
    return [
        Notification(m.uuid, m.heading or c.title, m.content or c.text, c.image_url, m.url or c.open_direct,
                     m.sent_at, m.opened_at)
        for m, c in rows
    ]


def tap(device: Device, message_uuid: str) -> tuple[EventReport, str | None]:
    """The user taps a notification: report the open (as the events API does) and return its deep link."""
    message = db.session.scalar(select(Message).where(Message.uuid == message_uuid, Message.device_id == device.id))
    if message is None:
        raise ServiceError("That notification is not on this device.", code="not_found")
    campaign = db.session.get(Campaign, message.campaign_id) if message.campaign_id else None
    link = message.url or (campaign.open_direct if campaign else None)
    report = record_events([DeviceEvent(message_uuid, "opened")], app_id=device.app_id)
    return report, link


# Deep-link resolvers: (scheme-less path prefix, function returning a console URL or None). The offers section
# registers "offers/" so an offer deep link opens that offer's page in the simulated app.
DEEP_LINK_RESOLVERS: list[tuple[str, object]] = []


def deep_link_target(route: str) -> str | None:
    """The console page a deep link leads to in the simulated app, if any section knows it."""
    path = route.split("://", 1)[-1]
    for prefix, resolve in DEEP_LINK_RESOLVERS:
        if path.startswith(prefix):
            return resolve(path[len(prefix):])  # type: ignore[operator]
    return None
