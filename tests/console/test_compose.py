"""Compose → confirm → send; Push Offer prefill; validation; double submission; live count; test sends."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from tests.factories import make_app, make_device, make_group, make_subscriber
from webadmin.extensions import db
from webadmin.models.audit import AuditEvent
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.offer import Offer
from webadmin.models.types import utcnow
from webadmin.models.user import Role


def _audience():
    push_app = make_app("Nibs")
    alice, bob = make_subscriber("alice@example.com"), make_subscriber("bob@example.com")
    make_device(push_app, alice, "android")
    make_device(push_app, alice, "ios")
    make_device(push_app, bob, "android")
    return push_app, make_group("Key customers", [alice])


def _form(push_app, **overrides):
    data = {"submission_id": "f-1", "app_id": push_app.id, "text": "Half price today", "title": "Nibs",
            "open_direct": "nibs://offers/1", "target": "all", "when": "now", "time_zone": "UTC"}
    data.update(overrides)
    return data


def test_compose_confirm_send(app, client, login_as):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    page = client.get("/compose/").get_data(as_text=True)
    assert "3</strong> device(s) would receive" in page
    response = client.post("/compose/", data=_form(push_app))
    campaign = db.session.scalar(select(Campaign))
    assert response.headers["Location"] == f"/campaigns/{campaign.id}"
    confirm = client.get(f"/campaigns/{campaign.id}").get_data(as_text=True)
    assert "Send now to 3 devices" in confirm and campaign.status == "draft"
    assert db.session.scalar(select(func.count(Message.id))) == 0  # nothing sent before the confirmation
    client.post(f"/campaigns/{campaign.id}/send")
    again = client.post(f"/campaigns/{campaign.id}/send", follow_redirects=True)  # second click
    assert "Cannot send a campaign that is sent" in again.get_data(as_text=True)
    db.session.expire_all()
    campaign = db.session.get(Campaign, campaign.id)
    assert (campaign.status, campaign.targeted, campaign.sent) == ("sent", 3, 3)
    actions = set(db.session.scalars(select(AuditEvent.action)))
    assert {"campaign.draft", "campaign.send"} <= actions


def test_double_submitted_form_makes_one_draft(client, login_as):
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    first = client.post("/compose/", data=_form(push_app))
    second = client.post("/compose/", data=_form(push_app))
    assert first.headers["Location"] == second.headers["Location"]
    assert db.session.scalar(select(func.count(Campaign.id))) == 1


def test_dangerous_deep_links_are_refused(client, login_as):
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    for link in ("javascript:alert(1)", "data:text/html,x", "http://example.com"):
        page = client.post("/compose/", data=_form(push_app, open_direct=link, submission_id=link))
        assert page.status_code == 200 and "links are allowed" in page.get_data(as_text=True)
    assert db.session.scalar(select(func.count(Campaign.id))) == 0


def test_groups_with_platform_filter_and_live_count(client, login_as):
    push_app, group = _audience()
    login_as(Role.MARKETER)
    fragment = client.get("/compose/count", query_string={"app_id": push_app.id, "target": "groups",
                                                          "group_ids": group.id, "platforms": "ios"})
    assert "<strong>1</strong> device(s)" in fragment.get_data(as_text=True)
    keys = client.get("/compose/count", query_string={"app_id": push_app.id, "target": "keys",
                                                      "keys": "alice@example.com\nghost@example.com"})
    html = keys.get_data(as_text=True)
    assert "<strong>2</strong>" in html and "ghost@example.com" in html and "1 unknown key" in html


def test_push_offer_prefill_and_expired_offer(client, login_as):
    push_app, _ = _audience()
    current = Offer(app_id=push_app.id, name="Chocolate Week", deep_link="nibs://offers/1")
    expired = Offer(app_id=push_app.id, name="Old Deal", valid_until=utcnow() - timedelta(days=1))
    db.session.add_all([current, expired])
    db.session.commit()
    login_as(Role.MARKETER)
    page = client.get(f"/compose/?offer_id={current.id}").get_data(as_text=True)
    assert "Exclusive Offer: Chocolate Week" in page and "nibs://offers/1" in page
    refused = client.get(f"/compose/?offer_id={expired.id}").get_data(as_text=True)
    assert "cannot be pushed" in refused and "Exclusive Offer: Old Deal" not in refused
    client.post("/compose/", data=_form(push_app, offer_id=current.id, open_direct="", text="Exclusive Offer: Choc"))
    campaign = db.session.scalar(select(Campaign))
    assert (campaign.source, campaign.related_type, campaign.related_id) == ("offer", "offer", str(current.id))
    assert campaign.open_direct == "nibs://offers/1"


def test_schedule_from_compose_in_a_time_zone(client, login_as):
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    tomorrow = (utcnow() + timedelta(days=1)).date()
    client.post("/compose/", data=_form(push_app, when="later", date=tomorrow.isoformat(), time="09:30",
                                        time_zone="Europe/Warsaw"))
    campaign = db.session.scalar(select(Campaign))
    client.post(f"/campaigns/{campaign.id}/schedule")
    db.session.expire_all()
    campaign = db.session.get(Campaign, campaign.id)
    assert campaign.status == "scheduled" and campaign.schedule_time_zone == "Europe/Warsaw"
    assert campaign.scheduled_at.hour in (7, 8)  # 09:30 in Warsaw is 08:30 UTC in winter, 07:30 in summer
    client.post(f"/campaigns/{campaign.id}/cancel")
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).status == "cancelled"


def test_send_test_goes_only_to_test_keys(app, client, login_as):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    push_app, _ = _audience()
    login_as(Role.MARKETER)
    client.post("/compose/test", data={**_form(push_app), "test_keys": "bob@example.com"})
    campaign = db.session.scalar(select(Campaign))
    assert (campaign.tag, campaign.targeted, campaign.status) == ("test", 1, "sent")


def test_viewer_cannot_compose_or_send(client, login_as):
    push_app, _ = _audience()
    login_as(Role.VIEWER)
    assert client.get("/compose/").status_code == 403
    assert client.post("/compose/", data=_form(push_app)).status_code == 403
    assert db.session.scalar(select(func.count(Campaign.id))) == 0
