"""POST /api/v1/push with `smsFallback`: API campaigns get the compose page's SMS fallback, checked the same way,
with errors that name the body's fields and write nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.api.conftest import client_with_key
from tests.api.factories import make_api_key
from tests.factories import make_device, make_subscriber
from tests.sms.conftest import LINK, journal_lines, later, sms_rows
from webadmin.extensions import db
from webadmin.models.campaign import Campaign
from webadmin.sms.fallback import tick


@pytest.fixture
def api_client(app, push_app):
    """A client with an API key of the push app."""
    return client_with_key(app, make_api_key(push_app)[1])


def _campaigns() -> int:
    return db.session.scalar(select(func.count()).select_from(Campaign))


def test_an_api_push_with_a_fallback_sends_sms_to_those_who_did_not_open(push_app, sms_channel, journal,
                                                                         api_client):
    sms_channel()
    make_device(push_app, make_subscriber("bob@example.com", phone="+48500100002"), "android")
    make_device(push_app, make_subscriber("dave@example.com"), "ios")
    answer = api_client.post("/api/v1/push", json={"messageText": "Half price today", "openDirect": LINK,
                                                   "smsFallback": {"afterSeconds": 600}})
    assert answer.status_code == 202, answer.json
    campaign = db.session.get(Campaign, answer.json["id"])
    assert (campaign.sms_fallback_seconds, campaign.sms_fallback_text) == (600, f"Half price today {LINK}")
    assert answer.json["smsFallback"] == {"afterSeconds": 600, "text": f"Half price today {LINK}"}  # as it will go

    assert tick(later(minutes=5))["created"] == 0  # inside the window
    assert tick(later(minutes=11))["created"] == 2
    states = sorted((r.state, r.skip_reason) for r in sms_rows(campaign.id))
    assert states == [("DEBUG", None), ("SKIPPED", "no_phone")]
    assert [to for _, _, to in journal_lines(journal)] == ["+48500100002"]


def test_the_fallback_text_is_the_one_given(push_app, sms_channel, api_client):
    sms_channel()
    answer = api_client.post("/api/v1/push", json={"messageText": "Hi", "smsFallback": {"afterSeconds": 3600,
                                                                                        "text": "Your offer ends"}})
    assert answer.status_code == 202, answer.json
    assert db.session.get(Campaign, answer.json["id"]).sms_fallback_text == "Your offer ends"


def test_without_the_field_there_is_no_fallback(push_app, sms_channel, api_client):
    sms_channel()
    answer = api_client.post("/api/v1/push", json={"messageText": "Hi"})
    assert answer.status_code == 202
    campaign = db.session.get(Campaign, answer.json["id"])
    assert (campaign.sms_fallback_seconds, campaign.sms_fallback_text) == (None, None)
    assert answer.json["smsFallback"] is None


@pytest.mark.parametrize(
    ("fallback", "field", "words"),
    [
        ({"afterSeconds": 30}, "smsFallback.afterSeconds", "at least 60"),
        ({"afterSeconds": 73 * 3600}, "smsFallback.afterSeconds", "at most"),
        ({"afterSeconds": 600.5}, "smsFallback.afterSeconds", "integer"),
        ({}, "smsFallback.afterSeconds", "required"),
        ({"afterSeconds": 600, "sender": "x"}, "smsFallback.sender", "not a known field"),
        ({"afterSeconds": 600, "text": "ж" * 500}, "smsFallback.text", "parts"),
        ("soon", "smsFallback", "object"),
    ],
)
def test_a_bad_fallback_is_a_422_naming_its_field_and_creates_nothing(push_app, sms_channel, api_client, fallback,
                                                                      field, words):
    sms_channel()
    answer = api_client.post("/api/v1/push", json={"messageText": "Hi", "smsFallback": fallback})
    assert answer.status_code == 422, answer.json
    assert answer.json["error"]["field"] == field and words in answer.json["error"]["message"], answer.json
    assert _campaigns() == 0


def test_no_sms_channel_is_a_422_and_creates_nothing(push_app, api_client):
    answer = api_client.post("/api/v1/push", json={"messageText": "Hi", "smsFallback": {"afterSeconds": 600}})
    assert answer.status_code == 422
    assert answer.json["error"]["field"] == "smsFallback" and "Settings → SMS" in answer.json["error"]["message"]
    assert _campaigns() == 0
