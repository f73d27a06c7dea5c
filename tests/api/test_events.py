"""POST /api/v1/events by campaign + device token (the bulk routes' pushes carry only `campaignId`), mixed with the
message form; exactly one form per event; the hand-written validation agrees with the published schema."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import jsonschema_rs
import pytest
from sqlalchemy import func, select

from tests.api.conftest import client_with_key
from tests.api.factories import make_api_key, make_app, make_device, make_subscriber
from webadmin import driver_sql
from webadmin.api import openapi
from webadmin.api.events import parse_batch
from webadmin.api.validation import ApiError
from webadmin.extensions import db
from webadmin.models.analytics import CampaignRollup, HourlyRollup
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.services import rollups
from webadmin.services.events import DeviceEvent, record_events

MESSAGE = "00000000-0000-4000-8000-00000000000a"
CAMPAIGN = "00000000-0000-4000-8000-00000000000c"


def _campaign(app, client, tokens: dict[str, str]) -> Campaign:
    """A campaign of `client`'s app sent to devices with these tokens (token → platform)."""
    for token, platform in tokens.items():
        make_device(app, token, platform, subscriber_id=make_subscriber().id)
    answer = client.post("/api/v1/push", json={"messageText": "Hi"})
    assert answer.status_code == 202, answer.json
    return db.session.scalar(select(Campaign).where(Campaign.app_id == app.id).order_by(Campaign.id.desc()))


def _message(campaign: Campaign, token: str) -> Message:
    return db.session.scalar(select(Message).join(Device, Device.id == Message.device_id)
                             .where(Message.campaign_id == campaign.id, Device.token == token))


def _rollup_opens(campaign: Campaign) -> tuple[int, int, int]:
    db.session.expire_all()
    funnel = db.session.get(CampaignRollup, campaign.id)
    hourly = db.session.scalar(select(func.sum(HourlyRollup.opened)))
    return db.session.get(Campaign, campaign.id).opened, funnel.opened if funnel else 0, int(hourly or 0)


def test_campaign_and_device_count_once_and_match_the_message_form(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    campaign = _campaign(api_app, api_client, {"tok-a": "android", "tok-b": "ios", "tok-c": "android"})
    by_pair = {"campaign": campaign.uuid.upper(), "device": "tok-a", "type": "opened"}
    a, b = _message(campaign, "tok-a"), _message(campaign, "tok-b")
    batch = {"events": [by_pair, by_pair, {"message": a.uuid, "type": "opened"},  # the same open three ways
                        {"campaign": campaign.uuid, "device": "tok-b", "type": "received"},
                        {"campaign": campaign.uuid, "device": "tok-b", "type": "opened", "at": "2001-01-01T00:00Z"}]}
    answer = api_client.post("/api/v1/events", json=batch)
    assert answer.status_code == 200, answer.json
    assert answer.json == {"counted": 3, "duplicates": 2, "unknownMessages": [], "unknownCampaignDevices": []}
    again = api_client.post("/api/v1/events", json=batch)
    assert again.json == {"counted": 0, "duplicates": 5, "unknownMessages": [], "unknownCampaignDevices": []}
    db.session.expire_all()
    a, b, c = _message(campaign, "tok-a"), _message(campaign, "tok-b"), _message(campaign, "tok-c")
    assert a.opened_at is not None and a.received_at is None
    assert b.opened_at == b.sent_at and b.received_at is not None  # a device clock before the send is clamped
    assert c.opened_at is None and c.received_at is None
    assert _rollup_opens(campaign) == (2, 2, 2)
    live = db.session.get(CampaignRollup, campaign.id)
    live = (live.opened, live.received)
    rollups.rebuild()
    db.session.expire_all()
    rebuilt = db.session.get(CampaignRollup, campaign.id)
    assert live == (rebuilt.opened, rebuilt.received) == (2, 1)


def test_unknown_pairs_are_listed_and_the_rest_counts(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    ours = _campaign(api_app, api_client, {"tok-a": "android"})
    other_app = make_app("Other")
    other_client = client_with_key(app, make_api_key(other_app)[1])
    theirs = _campaign(other_app, other_client, {"tok-a": "ios", "tok-z": "android"})  # the same token, their app
    make_device(api_app, "tok-late", "android")  # registered after our campaign: it was not targeted
    events = [
        {"campaign": CAMPAIGN, "device": "tok-a", "type": "opened"},  # no such campaign
        {"campaign": theirs.uuid, "device": "tok-a", "type": "opened"},  # a campaign of another app
        {"campaign": ours.uuid, "device": "tok-z", "type": "opened"},  # a token of another app only
        {"campaign": ours.uuid, "device": "tok-late", "type": "opened"},  # our device, not in the campaign
        {"message": MESSAGE, "type": "opened"},
        {"campaign": ours.uuid, "device": "tok-a", "type": "opened"},
    ]
    answer = api_client.post("/api/v1/events", json={"events": events})
    assert answer.status_code == 200, answer.json
    assert answer.json == {
        "counted": 1, "duplicates": 0, "unknownMessages": [MESSAGE],
        "unknownCampaignDevices": [{"campaign": CAMPAIGN, "device": "tok-a"},
                                   {"campaign": theirs.uuid, "device": "tok-a"},
                                   {"campaign": ours.uuid, "device": "tok-z"},
                                   {"campaign": ours.uuid, "device": "tok-late"}],
    }
    assert _rollup_opens(ours)[:2] == (1, 1) and _rollup_opens(theirs)[:2] == (0, 0)
    # The other app reports its own campaign + token: its message, not ours.
    theirs_answer = other_client.post("/api/v1/events", json={"events": [events[1]]})
    assert theirs_answer.json["counted"] == 1
    db.session.expire_all()
    assert _message(theirs, "tok-a").opened_at is not None and _rollup_opens(theirs)[:2] == (1, 1)


@pytest.mark.parametrize(("event", "field"), [
    ({"type": "opened"}, "events[1].message"),
    ({"message": MESSAGE, "campaign": CAMPAIGN, "device": "tok-a", "type": "opened"}, "events[1].campaign"),
    ({"message": MESSAGE, "device": "tok-a", "type": "opened"}, "events[1].device"),
    ({"campaign": CAMPAIGN, "type": "opened"}, "events[1].device"),
    ({"device": "tok-a", "type": "opened"}, "events[1].campaign"),
    ({"campaign": "not-a-uuid", "device": "tok-a", "type": "opened"}, "events[1].campaign"),
    ({"campaign": CAMPAIGN, "device": "bad token!", "type": "opened"}, "events[1].device"),
    ({"campaign": CAMPAIGN, "device": "", "type": "opened"}, "events[1].device"),
    ({"campaign": CAMPAIGN, "device": "tok-a", "type": "clicked"}, "events[1].type"),
    ({"campaign": CAMPAIGN, "device": "tok-a"}, "events[1].type"),
    ({"campaign": CAMPAIGN, "device": "tok-a", "type": "opened", "at": "yesterday"}, "events[1].at"),
    ({"campaign": CAMPAIGN, "device": "tok-a", "type": "opened", "at": "2026-13-01T00:00:00Z"}, "events[1].at"),
    ({"campaign": CAMPAIGN, "device": "tok-a", "type": "opened", "extra": 1}, "events[1].extra"),
])
def test_exactly_one_form_per_event_or_422_naming_the_field(app, api_app, api_client, event, field):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    campaign = _campaign(api_app, api_client, {"tok-a": "android"})
    good = {"campaign": campaign.uuid, "device": "tok-a", "type": "opened"}
    answer = api_client.post("/api/v1/events", json={"events": [good, event]})
    assert answer.status_code == 422, answer.json
    assert answer.json["error"]["field"] == field, answer.json
    db.session.expire_all()
    assert _message(campaign, "tok-a").opened_at is None  # nothing of the batch was written
    assert _rollup_opens(campaign) == (0, 0, 0)


def _document_verdict(body) -> bool:
    """Whether the published OpenAPI schema accepts the body (components resolved as in the document)."""
    document = openapi.document()
    schema = {"$ref": "#/components/schemas/EventBatch", "components": document["components"]}
    return jsonschema_rs.validator_for(schema, validate_formats=True).is_valid(body)


def _parsed(body) -> bool:
    try:
        parse_batch(body)
    except ApiError as exc:
        assert exc.status == 422
        return False
    return True


def _bodies():
    events = [
        {"message": MESSAGE, "type": "opened"}, {"message": MESSAGE.upper(), "type": "received"},
        {"campaign": CAMPAIGN, "device": "tok-a", "type": "opened", "at": "2026-12-04T10:00:00.5+01:00"},
        {"campaign": CAMPAIGN, "device": "a" * 1024, "type": "opened"},
        {"campaign": CAMPAIGN, "device": "a" * 1025, "type": "opened"},
        {"campaign": CAMPAIGN, "device": ".tok", "type": "opened"},
        {"campaign": CAMPAIGN, "device": 7, "type": "opened"},
        {"message": MESSAGE, "type": "opened", "at": "2026-12-04T10:00:00"},  # no offset
        {"message": MESSAGE, "type": "opened", "at": "2026-12-04T10:00:00Z\n"},
        {"message": MESSAGE, "type": "opened", "at": "２０２６-12-04T10:00:00Z"},  # not ASCII digits
        {"message": MESSAGE + "\n", "type": "opened"}, {"message": None, "type": "opened"},
        {"message": MESSAGE, "type": ["opened"]}, {"message": MESSAGE, "type": "opened", "campaign": CAMPAIGN},
        {"message": MESSAGE, "type": "opened", "device": "tok-a"}, {"campaign": CAMPAIGN, "type": "opened"},
        {"device": "tok", "type": "opened"}, {"type": "opened"}, {}, [], "opened", None,
    ]
    yield from ({"events": [event]} for event in events)
    yield from ({}, {"events": []}, {"events": {}}, {"events": [events[0]] * 1000},
                {"events": [events[0]] * 1001}, {"events": [events[0]], "more": 1}, [], "x", None)


@pytest.mark.parametrize("body", list(_bodies()), ids=lambda body: json.dumps(body)[:60])
def test_validation_agrees_with_the_published_schema(body):
    assert _parsed(body) == _document_verdict(body)


def test_concurrent_reports_of_the_same_events_count_once(app, api_app, api_key, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    campaign = _campaign(api_app, api_client, {"tok-a": "android", "tok-b": "ios", "tok-c": "android"})
    a, b = _message(campaign, "tok-a"), _message(campaign, "tok-b")
    batch = {"events": [{"message": a.uuid, "type": "opened"}, {"message": b.uuid, "type": "received"},
                        {"campaign": campaign.uuid, "device": "tok-c", "type": "opened"},
                        {"message": b.uuid, "type": "opened"}]}
    barrier, answers = threading.Barrier(6), []

    def report():
        client = client_with_key(app, api_key[1])
        barrier.wait(timeout=10)
        with app.app_context():
            answers.append(client.post("/api/v1/events", json=batch))

    threads = [threading.Thread(target=report) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [answer.status_code for answer in answers] == [200] * 6
    assert sum(answer.json["counted"] for answer in answers) == 4
    assert sum(answer.json["duplicates"] for answer in answers) == 4 * 5
    assert _rollup_opens(campaign) == (3, 3, 3)
    assert db.session.get(CampaignRollup, campaign.id).received == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_asynchronous_commit_stays_with_the_event_transaction(app):
    """A report commits with `SET LOCAL synchronous_commit = off` (and a forced generic plan): LOCAL, so the pooled
    connection's next transactions, which may be any other write of the product, still wait for the flush."""
    connection = driver_sql.Transaction().driver
    before = connection.execute("SHOW synchronous_commit").fetchone()[0]
    report = record_events([DeviceEvent(MESSAGE, "opened")], app_id=None)
    assert report.unknown == [MESSAGE]  # the statement ran and committed
    assert driver_sql.Transaction().driver is connection  # the same connection, after the commit
    assert connection.execute("SHOW synchronous_commit").fetchone()[0] == before != "off"
    assert connection.execute("SHOW plan_cache_mode").fetchone()[0] == "auto"


def test_device_times_at_the_ends_of_the_calendar_are_clamped_not_fatal(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    campaign = _campaign(api_app, api_client, {"tok-a": "android"})
    a = _message(campaign, "tok-a")
    batch = {"events": [{"message": a.uuid, "type": "opened", "at": "0001-01-01T00:00:00+01:00"},  # year 0 in UTC
                        {"message": a.uuid, "type": "received", "at": "9999-12-31T23:59:00-01:00"}]}  # year 10000
    answer = api_client.post("/api/v1/events", json=batch)
    assert answer.status_code == 200, answer.json
    assert answer.json["counted"] == 2
    db.session.expire_all()
    a = _message(campaign, "tok-a")
    assert a.opened_at == a.sent_at and a.sent_at <= a.received_at <= datetime.now(UTC)


def test_a_message_of_another_app_is_unknown_by_its_uuid_too(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    other_app = make_app("Other")
    theirs = _campaign(other_app, client_with_key(app, make_api_key(other_app)[1]), {"tok-z": "ios"})
    their_message = _message(theirs, "tok-z")
    answer = api_client.post("/api/v1/events", json={"events": [{"message": their_message.uuid, "type": "opened"}]})
    assert answer.json == {"counted": 0, "duplicates": 0, "unknownMessages": [their_message.uuid],
                           "unknownCampaignDevices": []}
    db.session.expire_all()
    assert _message(theirs, "tok-z").opened_at is None and _rollup_opens(theirs)[:2] == (0, 0)
