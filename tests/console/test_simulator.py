"""Simulated devices receive pushes through the Simulator channel; a tap counts one open."""

from __future__ import annotations

from sqlalchemy import select

from tests.factories import make_app
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign, Channel
from webadmin.models.message import Message
from webadmin.models.user import Role
from webadmin.services import campaigns
from webadmin.services.campaigns import CampaignDraft


def _simulator_app():
    app = make_app("Nibs")
    for platform in ("android", "ios", "web"):
        db.session.add(Channel(app_id=app.id, platform=platform, backend="simulator", name=f"Simulator {platform}",
                               credentials_encrypted=encrypt_credentials({})))
    db.session.commit()
    return app


def test_push_arrives_on_the_phone_and_a_tap_counts_once(app, client, login_as):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    push_app = _simulator_app()
    login_as(Role.MARKETER)
    response = client.post("/simulator/", data={"app_id": push_app.id, "platform": "ios",
                                                "subscriber_key": "alice@example.com"})
    assert response.status_code == 302
    device = db.session.scalar(select(Device))
    assert device.token.startswith("sim-ios-") and response.headers["Location"] == f"/simulator/{device.id}"
    assert "No notifications yet" in client.get(f"/simulator/{device.id}").get_data(as_text=True)

    draft = CampaignDraft(app_id=push_app.id, text="Half price today", title="Exclusive Offer: Nibs",
                          open_direct="nibs://offers/7", audience={"type": "keys", "keys": ["alice@example.com"]})
    campaign = campaigns.create_campaign(draft, actor="test")
    campaigns.start(campaign, actor="test")
    inbox = client.get(f"/simulator/{device.id}", headers={"HX-Request": "true", "HX-Target": "simulator-inbox"})
    html = inbox.get_data(as_text=True)
    assert html.lstrip().startswith('<div id="simulator-inbox"') and "Half price today" in html
    message = db.session.scalar(select(Message))
    assert (message.state, message.backend) == ("SENT", "simulator")

    for _ in range(3):  # a tap reported three times is one open
        tapped = client.post(f"/simulator/{device.id}/open/{message.uuid}")
    assert tapped.status_code == 302 and "route=nibs://offers/7" in tapped.headers["Location"]
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).opened == 1
    screen = client.get(tapped.headers["Location"]).get_data(as_text=True)
    assert "nibs://offers/7" in screen


def test_viewer_sees_phone_but_cannot_tap_or_add(app, client, login_as, auth):
    push_app = _simulator_app()
    login_as(Role.MARKETER)
    client.post("/simulator/", data={"app_id": push_app.id, "platform": "web"})
    device = db.session.scalar(select(Device))
    auth.logout()
    login_as(Role.VIEWER)
    assert client.get(f"/simulator/{device.id}").status_code == 200
    assert client.post("/simulator/", data={"app_id": push_app.id, "platform": "web"}).status_code == 403
    assert client.post(f"/simulator/{device.id}/open/whatever").status_code == 403


def test_unknown_device_is_404(client, login_as):
    login_as(Role.VIEWER)
    assert client.get("/simulator/999").status_code == 404
