"""Campaign pages: list filters and pages, the message log search, pause/resume, duplicate as new, held campaigns,
the progress fragment (htmx), offers that stop being current after the draft, and the audit of each step."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.factories import make_app, make_device, make_subscriber
from webadmin.extensions import db
from webadmin.models.audit import AuditEvent
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.offer import Offer
from webadmin.models.types import utcnow
from webadmin.models.user import Role
from webadmin.services import campaign_views, campaigns
from webadmin.services.campaigns import CampaignDraft

HTMX_PROGRESS = {"HX-Request": "true", "HX-Target": "campaigns-progress"}


@pytest.fixture
def nibs(app):
    """An app with three subscribers on the Debug backend (no channel: messages end in DEBUG)."""
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    push_app = make_app("Nibs")
    for key in ("alice@example.com", "bob@example.com", "carol@example.com"):
        make_device(push_app, make_subscriber(key), "android")
    return push_app


def _campaign(push_app, text="Hello", **fields) -> Campaign:
    campaign = Campaign(app_id=push_app.id, text=text, audience={"type": "all"}, **fields)
    db.session.add(campaign)
    db.session.commit()
    return campaign


def _draft(push_app, **fields) -> Campaign:
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Hi all", **fields), actor="test")
    db.session.commit()
    return campaign


def _fresh(campaign: Campaign) -> Campaign:
    db.session.expire_all()
    return db.session.get(Campaign, campaign.id)


def _ids_on(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'href="/campaigns/(\d+)"', page)]


def test_list_filters_by_status_source_text_and_held(client, login_as, nibs):
    sent = _campaign(nibs, "Weekend sale", status="sent", source="offer")
    api = _campaign(nibs, "From the app", status="sent", source="api")
    draft = _campaign(nibs, "Draft idea")
    held = _campaign(nibs, "Late one", status="scheduled", scheduled_at=utcnow() - timedelta(hours=2),
                     status_reason="Missed its time")
    waiting = _campaign(nibs, "Tomorrow", status="scheduled", scheduled_at=utcnow() + timedelta(days=1))
    login_as(Role.VIEWER)
    assert _ids_on(client.get("/campaigns/?status=sent").get_data(as_text=True)) == [api.id, sent.id]
    assert _ids_on(client.get("/campaigns/?source=offer").get_data(as_text=True)) == [sent.id]
    assert _ids_on(client.get("/campaigns/?q=idea").get_data(as_text=True)) == [draft.id]
    assert _ids_on(client.get("/campaigns/?status=scheduled").get_data(as_text=True)) == [waiting.id, held.id]
    only_held = client.get("/campaigns/?status=held").get_data(as_text=True)
    assert _ids_on(only_held) == [held.id]
    assert 'title="Missed its time">held</span>' in only_held
    everything = client.get("/campaigns/").get_data(as_text=True)
    assert everything.count(">held</span>") == 1  # the badge marks the held one only
    assert _ids_on(client.get("/campaigns/?q=nothing-like-this").get_data(as_text=True)) == []


def test_list_pages(client, login_as, nibs, monkeypatch):
    monkeypatch.setattr(campaign_views, "PAGE_SIZE", 2)
    made = [_campaign(nibs, f"Push {n}").id for n in range(5)]
    login_as(Role.VIEWER)
    first = client.get("/campaigns/").get_data(as_text=True)
    assert _ids_on(first) == made[::-1][:2] and "page=2" in first
    last = client.get("/campaigns/?page=3").get_data(as_text=True)
    assert _ids_on(last) == [made[0]] and "page=4" not in last and "page=2" in last


def test_message_log_search_by_key_state_and_error(client, login_as, nibs):
    campaign = _draft(nibs)
    campaigns.start(campaign, actor="test")
    db.session.execute(Message.__table__.update().where(Message.recipient == "bob@example.com")
                       .values(state="ERROR", error="token expired"))
    db.session.commit()
    login_as(Role.VIEWER)
    url = f"/campaigns/{campaign.id}/messages"
    htmx = {"HX-Request": "true", "HX-Target": "campaigns-log"}

    def recipients(**query):
        html = client.get(url, query_string=query, headers=htmx).get_data(as_text=True)
        return re.findall(r"<td>([a-z]+@example\.com)</td>", html)

    assert recipients() == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert recipients(key="CAR") == ["carol@example.com"]  # prefix, case-insensitive
    assert recipients(state="ERROR") == ["bob@example.com"]
    assert recipients(error="expired") == ["bob@example.com"]
    assert recipients(key="zed") == []
    full = client.get(url, query_string={"key": "alice"})  # without htmx: the page with the same filter
    assert full.status_code == 302 and "key=alice" in full.headers["Location"]


def test_pause_and_resume_through_the_routes(client, login_as, nibs):
    campaign = _draft(nibs)
    campaigns.start(campaign, actor="test", enqueue=False)  # sending, nothing dispatched yet
    login_as(Role.MARKETER)
    page = client.post(f"/campaigns/{campaign.id}/pause", follow_redirects=True).get_data(as_text=True)
    assert "Paused after the batches in flight." in page and _fresh(campaign).status == "paused"
    assert ">Resume</button>" in page and ">Pause</button>" not in page
    again = client.post(f"/campaigns/{campaign.id}/pause", follow_redirects=True).get_data(as_text=True)
    assert "Cannot pause a campaign that is paused" in again
    client.post(f"/campaigns/{campaign.id}/resume")
    resumed = _fresh(campaign)
    assert (resumed.status, resumed.sent) == ("sent", 3)  # the immediate queue sent the rest
    actions = list(db.session.scalars(select(AuditEvent.action).where(AuditEvent.object_id == str(campaign.id))
                                      .order_by(AuditEvent.id)))
    assert actions[-2:] == ["campaign.pause", "campaign.resume"]


def test_duplicate_as_new_prefills_compose(client, login_as, nibs):
    campaign = _draft(nibs, title="Nibs", open_direct="nibs://home", data={"promo": "x1"},
                      audience={"type": "keys", "keys": ["alice@example.com"], "platforms": ["android"]})
    login_as(Role.MARKETER)
    page = client.get(f"/compose/?from={campaign.id}").get_data(as_text=True)
    assert "Hi all</textarea>" in page and 'value="nibs://home"' in page and "promo=x1" in page
    assert re.search(r'<input[^>]*checked[^>]*value="keys"', page) and "alice@example.com</textarea>" in page
    link = client.get(f"/campaigns/{campaign.id}").get_data(as_text=True)
    assert f'href="/compose/?from={campaign.id}"' in link


def test_duplicate_of_a_push_whose_offer_expired_drops_the_offer_and_says_why(client, login_as, nibs):
    offer = Offer(app_id=nibs.id, name="Chocolate Week", deep_link="nibs://offers/1")
    db.session.add(offer)
    db.session.commit()
    campaign = _draft(nibs, open_direct="nibs://offers/1", related_type="offer", related_id=str(offer.id),
                      source="offer")
    offer.valid_until = utcnow() - timedelta(days=1)
    db.session.commit()
    login_as(Role.MARKETER)
    page = client.get(f"/compose/?from={campaign.id}").get_data(as_text=True)
    assert "“Chocolate Week” was left out" in page and "expired" in page
    assert 'value="nibs://offers/1"' not in page  # its link went with it
    form = {"submission_id": "dup", "app_id": nibs.id, "text": "Hi all", "target": "all", "when": "now",
            "time_zone": "UTC", "offer_id": ""}
    assert client.post("/compose/", data=form).status_code == 302  # no "Not a valid choice"


def test_confirm_sends_a_held_campaign_and_refuses_one_that_is_not_held(app, client, login_as, nibs):
    late = _draft(nibs)
    campaigns.transition(late, campaigns.S.SCHEDULED, scheduled_at=utcnow() - timedelta(hours=1))
    db.session.commit()
    assert campaigns.start_if_due(late.id) == "held"
    on_time = _draft(nibs, scheduled_at=utcnow() + timedelta(hours=1))
    campaigns.schedule(on_time, on_time.scheduled_at, actor="test")
    login_as(Role.MARKETER)
    page = client.get(f"/campaigns/{late.id}").get_data(as_text=True)
    assert "<strong>Held.</strong>" in page and "Send now anyway" in page
    assert "Send now anyway" not in client.get(f"/campaigns/{on_time.id}").get_data(as_text=True)
    refused = client.post(f"/campaigns/{on_time.id}/confirm", follow_redirects=True).get_data(as_text=True)
    assert "Only a held campaign can be confirmed" in refused and _fresh(on_time).status == "scheduled"
    client.post(f"/campaigns/{late.id}/confirm")
    assert (_fresh(late).status, _fresh(late).sent) == ("sent", 3)


def test_dashboard_marks_held_campaigns(client, login_as, nibs):
    late = _draft(nibs)
    campaigns.transition(late, campaigns.S.SCHEDULED, scheduled_at=utcnow() - timedelta(hours=1))
    db.session.commit()
    campaigns.start_if_due(late.id)
    login_as(Role.VIEWER)
    recent = client.get("/").get_data(as_text=True).split('id="dashboard-recent"')[1].split("</section>")[0]
    assert f'<a href="/campaigns/{late.id}">Hi all</a></th><td>not yet</td><td>held</td>' in recent


def test_progress_fragment_polls_while_sending_then_stops_and_updates_the_controls(client, login_as, nibs):
    campaign = _draft(nibs)
    campaigns.start(campaign, actor="test", enqueue=False)
    login_as(Role.MARKETER)
    url = f"/campaigns/{campaign.id}"
    sending = client.get(url, headers=HTMX_PROGRESS).get_data(as_text=True)
    assert 'id="campaigns-progress"' in sending
    assert 'hx-trigger="every 1s"' in sending and "0 / 3 (0.0%)" in sending
    assert "<html" not in sending  # the fragment alone, not the page
    controls = sending.split('id="campaigns-controls"')[1]
    assert 'hx-swap-oob="true"' in controls and ">Pause</button>" in controls
    campaigns.pause(campaign, actor="test")
    campaigns.resume(_fresh(campaign), actor="test")  # the immediate queue sends everything
    done = client.get(url, headers=HTMX_PROGRESS).get_data(as_text=True)
    assert "3 / 3 (100.0%)" in done and "hx-trigger" not in done.split('id="campaigns-controls"')[0]
    assert ">Pause</button>" not in done and ">Cancel</button>" not in done  # the controls follow the status
    assert 'id="campaigns-status-badge"' in done and ">sent<" in done
    boosted = client.get(url, headers={"HX-Request": "true", "HX-Boosted": "true"}).get_data(as_text=True)
    assert "<html" in boosted  # boosted navigation gets the page, not the fragment


def test_a_scheduled_campaign_polls_slowly_until_it_is_due(client, login_as, nibs):
    later = _draft(nibs, scheduled_at=utcnow() + timedelta(days=2))
    campaigns.schedule(later, later.scheduled_at, actor="test")
    soon = _draft(nibs, scheduled_at=utcnow() + timedelta(seconds=30))
    campaigns.schedule(soon, soon.scheduled_at, actor="test")
    login_as(Role.VIEWER)

    def interval(campaign):
        html = client.get(f"/campaigns/{campaign.id}", headers=HTMX_PROGRESS).get_data(as_text=True)
        return int(re.search(r'hx-trigger="every (\d+)s"', html).group(1))

    assert interval(later) == 60
    assert 2 <= interval(soon) <= 30


def test_an_offer_archived_after_its_draft_is_not_sent(client, login_as, nibs):
    offer = Offer(app_id=nibs.id, name="Chocolate Week", deep_link="nibs://offers/1")
    db.session.add(offer)
    db.session.commit()
    login_as(Role.MARKETER)
    form = {"submission_id": "o-1", "app_id": nibs.id, "text": "Exclusive Offer: Chocolate Week", "target": "all",
            "when": "now", "time_zone": "UTC", "offer_id": offer.id}
    campaign_id = int(client.post("/compose/", data=form).headers["Location"].rsplit("/", 1)[1])
    offer.archived = True
    db.session.commit()
    page = client.post(f"/campaigns/{campaign_id}/send", follow_redirects=True).get_data(as_text=True)
    assert "it cannot be pushed" in page
    assert _fresh(db.session.get(Campaign, campaign_id)).status == "draft"
    assert db.session.scalar(select(func.count(Message.id))) == 0


def test_scheduling_after_the_offer_ends_is_refused_and_the_scheduler_holds(client, login_as, nibs):
    offer = Offer(app_id=nibs.id, name="Flash Sale", deep_link="nibs://offers/2",
                  valid_until=utcnow() + timedelta(hours=1))
    db.session.add(offer)
    db.session.commit()
    about = {"related_type": "offer", "related_id": str(offer.id), "source": "offer"}
    too_late = _draft(nibs, scheduled_at=utcnow() + timedelta(days=2), **about)
    login_as(Role.MARKETER)
    page = client.post(f"/campaigns/{too_late.id}/schedule", follow_redirects=True).get_data(as_text=True)
    assert "“Flash Sale” is not current on" in page and _fresh(too_late).status == "draft"
    in_time = _draft(nibs, scheduled_at=utcnow() + timedelta(minutes=30), **about)
    client.post(f"/campaigns/{in_time.id}/schedule")
    assert _fresh(in_time).status == "scheduled"
    offer.archived = True  # archived before its time came
    db.session.commit()
    db.session.execute(Campaign.__table__.update().where(Campaign.id == in_time.id)
                       .values(scheduled_at=utcnow() - timedelta(minutes=1)))
    db.session.commit()
    assert campaigns.start_if_due(in_time.id) == "held"
    held = _fresh(in_time)
    assert held.status == "scheduled" and "is not current" in held.status_reason
    assert campaigns.due_campaign_ids() == []  # the sweeper leaves it alone
    assert db.session.scalar(select(func.count(Message.id))) == 0
    hold = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "campaign.hold"))
    assert hold.object_id == str(in_time.id) and hold.actor == "scheduler"


def test_schedule_and_cancel_are_audited(client, login_as, nibs):
    campaign = _draft(nibs, scheduled_at=utcnow() + timedelta(days=1))
    user = login_as(Role.MARKETER)
    client.post(f"/campaigns/{campaign.id}/schedule")
    client.post(f"/campaigns/{campaign.id}/cancel")
    rows = db.session.execute(select(AuditEvent.action, AuditEvent.actor, AuditEvent.detail)
                              .where(AuditEvent.object_id == str(campaign.id)).order_by(AuditEvent.id)).all()
    assert [(a, who) for a, who, _ in rows] == [("campaign.schedule", user.email), ("campaign.cancel", user.email)]
    assert rows[0][2]["at"].startswith(str(_fresh(campaign).scheduled_at.date()))


def test_viewer_cannot_use_the_controls(client, login_as, nibs):
    campaign = _draft(nibs)
    login_as(Role.VIEWER)
    assert client.post(f"/campaigns/{campaign.id}/send").status_code == 403
    assert ">Cancel</button>" not in client.get(f"/campaigns/{campaign.id}").get_data(as_text=True)
    assert _fresh(campaign).status == "draft"
