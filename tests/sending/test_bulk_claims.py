"""Bulk providers get whole requests: a claim is as large as a bulk route's batch size (OneSignal, Marketing
Cloud), not capped at ENGINE_BATCH_SIZE. Through dispatch against the local fake OneSignal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from tests.providers.fakes import ThreadedFake, reply
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign, Channel
from webadmin.models.message import Message
from webadmin.sending.channels import routes_for_app
from webadmin.sending.engine import claim_size, dispatch
from webadmin.services import campaigns
from webadmin.services.campaigns import CampaignDraft

ONESIGNAL_APP_ID = "5eb5a37e-b458-11e3-ac11-000c2940e62c"


@pytest.fixture
def fake_onesignal() -> Iterator[Any]:
    """A fake OneSignal on its own thread, accepting every request."""
    with ThreadedFake() as server:
        server.route("POST", "/notifications", reply({"id": "notification-1"}))
        yield server


def _onesignal(app_id: int, fake: Any, **options: Any) -> None:
    db.session.add(Channel(app_id=app_id, platform="android", backend="onesignal", name="OneSignal",
                           options={"endpoint": fake.url, **options},
                           credentials_encrypted=encrypt_credentials({"app_id": ONESIGNAL_APP_ID, "api_key": "k"})))
    db.session.commit()


def test_a_route_with_batch_size_5000_gets_one_call_for_5000_messages(app, push_app, manual_dispatch, fake_onesignal):
    assert app.config["ENGINE_BATCH_SIZE"] == 50
    _onesignal(push_app.id, fake_onesignal, batch_size=5000)
    db.session.execute(insert(Device), [{"app_id": push_app.id, "platform": "android", "token": f"sub-{i}"}
                                        for i in range(5000)])
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Bulk"), actor="test")
    db.session.commit()
    campaigns.start(campaign, actor="test")
    report = dispatch(campaign.id)
    assert report.stopped_because == "finished" and report.batches == 1
    [call] = fake_onesignal.calls("/notifications")
    assert len(call.json["include_subscription_ids"]) == 5000
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).sent == 5000
    states = db.session.execute(select(Message.state, func.count()).group_by(Message.state)).all()
    assert states == [("SENT", 5000)]


def test_claim_size_takes_only_bulk_routes_into_account(push_app, fake_onesignal, scripted_channel):
    scripted_channel("ios", options={"batch_size": 9000})  # not a bulk backend: chunks, never a bigger claim
    assert claim_size(routes_for_app(push_app.id), 1000) == 1000
    _onesignal(push_app.id, fake_onesignal)  # OneSignal's default: 2,000 per request
    assert claim_size(routes_for_app(push_app.id), 1000) == 2000
    assert claim_size(routes_for_app(push_app.id), 3000) == 3000
