"""A campaign with known outcomes, sent through the real engine (scripted android channel, Debug elsewhere):
sends, final failures of every class, a retry that succeeds, a retry that gives up, opens reported twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from flask import Flask
from sqlalchemy import select, update

from tests.factories import make_app, make_device, make_subscriber
from tests.sending import scripted  # noqa: F401  (registers the scripted backend)
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign, Channel
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.sending.engine import dispatch
from webadmin.services import campaigns
from webadmin.services.campaigns import CampaignDraft
from webadmin.services.events import DeviceEvent, record_events

# (token, platform): android goes to the scripted channel, ios to the Debug backend (sent as DEBUG).
DEVICES = [
    *[(f"ok-{i}", "android") for i in range(6)],
    *[(f"ios-{i}", "ios") for i in range(3)],
    ("dead-1", "android"), ("dead-2", "android"),  # invalid token
    ("payload-1", "android"),  # payload refused
    ("quota-1", "android"),  # 429 until it gives up at the attempt ceiling: quota
    ("retry-1", "android"),  # 503 once, then fine
    ("gone-1", "web"),  # unsubscribed after targeting: never sent, "other"
]


@dataclass
class KnownCampaign:
    """The campaign and the numbers the console must show for it."""

    campaign: Campaign
    expected: dict[str, int] = field(default_factory=lambda: {
        "targeted": 15, "sent": 10, "failed": 5, "invalid_token": 2, "quota": 1, "auth": 0, "payload": 1,
        "other": 1, "opened": 4, "received": 2,
    })
    by_platform: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {  # sent, failed, opened
        "android": (7, 4, 2), "ios": (3, 0, 2), "web": (0, 1, 0),
    })


def _due_again(campaign_id: int) -> None:
    """Retries are due now (instead of waiting out the backoff)."""
    db.session.execute(update(Message).where(Message.campaign_id == campaign_id, Message.state == "ERROR_RETRY")
                       .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()


def run_known_campaign(app: Flask, monkeypatch, *, source: str = "adhoc") -> KnownCampaign:
    """Send the campaign to the end and report its opens; the caller's app context is used."""
    app.config.update(ENGINE_KEEP_CONNECTIONS=False, ENGINE_MAX_ATTEMPTS=3)
    monkeypatch.setattr("webadmin.tasks.enqueue_dispatch", lambda cid, pending: 1)
    push_app = make_app("Known")
    db.session.add(Channel(app_id=push_app.id, platform="android", backend="scripted", name="scripted android",
                           credentials_encrypted=encrypt_credentials({})))
    devices = {token: make_device(push_app, make_subscriber(), platform, token=token) for token, platform in DEVICES}
    draft = CampaignDraft(app_id=push_app.id, text="Chocolate week", title="Treats", source=source)
    campaign = campaigns.create_campaign(draft, actor="test")
    campaigns.start(campaign, actor="test")
    db.session.execute(update(Device).where(Device.id == devices["gone-1"].id).values(status="unsubscribed"))
    db.session.commit()
    dispatch(campaign.id)  # round 1: quota-1 and retry-1 wait for a retry
    db.session.execute(update(Device).where(Device.id == devices["retry-1"].id).values(token="ok-retried"))
    _due_again(campaign.id)
    dispatch(campaign.id)  # round 2: retry-1 sent, quota-1 retries again
    _due_again(campaign.id)
    dispatch(campaign.id)  # round 3: quota-1 at the ceiling (3 attempts): failed, the campaign is sent
    _report_opens(campaign.id, devices)
    db.session.expire_all()
    return KnownCampaign(db.session.get(Campaign, campaign.id))


def _report_opens(campaign_id: int, devices: dict[str, Device]) -> None:
    """Opens of 2 android and 2 ios messages, each reported twice (once in the same batch, once later);
    receipts from 2 of them, one reported twice."""
    uuid_of = dict(db.session.execute(select(Message.device_id, Message.uuid)
                                      .where(Message.campaign_id == campaign_id)).all())
    opened = [uuid_of[devices[t].id] for t in ("ok-0", "ok-1", "ios-0", "ios-1")]
    events = [DeviceEvent(u, "opened") for u in opened] + [DeviceEvent(opened[0], "opened")]
    events += [DeviceEvent(opened[0], "received"), DeviceEvent(opened[2], "received")]
    record_events(events, app_id=None)
    record_events([DeviceEvent(u, "opened") for u in opened] + [DeviceEvent(opened[2], "received")], app_id=None)
