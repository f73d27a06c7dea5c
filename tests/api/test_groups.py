"""POST/DELETE /api/v1/groups/{id}/members: bulk membership by key, counts, unknown keys, limits, audit."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, insert, select

from tests.api.factories import make_group, make_subscriber
from webadmin.extensions import db
from webadmin.models.audience import GroupMember, Subscriber
from webadmin.models.audit import AuditEvent
from webadmin.models.types import utcnow

URL = "/api/v1/groups/{}/members"


def _members(group_id: int) -> int:
    """How many members a group has."""
    return db.session.scalar(select(func.count()).select_from(GroupMember).where(GroupMember.group_id == group_id))


def test_add_members_reports_added_existing_and_unknown(api_client, api_key):
    anna, bob = make_subscriber("anna@example.com"), make_subscriber("bob@example.com")
    group = make_group(members=[bob])
    keys = [" ANNA@example.com", "bob@example.com", "ghost@example.com", "anna@example.com"]
    response = api_client.post(URL.format(group.id), json={"subscriberKeys": keys})
    assert response.status_code == 200
    assert response.get_json() == {"added": 1, "alreadyMember": 1, "unknownKeys": ["ghost@example.com"]}
    assert _members(group.id) == 2
    event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "group.members_add")).one()
    assert event.actor == f"api:{api_key[0].prefix}"
    assert (event.object_id, event.detail["added"]) == (str(group.id), 1)
    assert anna.id


def test_remove_members(api_client):
    anna, bob = make_subscriber("anna@example.com"), make_subscriber("bob@example.com")
    make_subscriber("carol@example.com")
    group = make_group(members=[anna, bob])
    keys = ["anna@example.com", "carol@example.com", "nobody@example.com"]
    response = api_client.delete(URL.format(group.id), json={"subscriberKeys": keys})
    assert response.status_code == 200
    assert response.get_json() == {"removed": 1, "notMember": 1, "unknownKeys": ["nobody@example.com"]}
    assert _members(group.id) == 1


def test_adding_is_idempotent(api_client):
    make_subscriber("anna@example.com")
    group = make_group()
    body = {"subscriberKeys": ["anna@example.com"]}
    assert api_client.post(URL.format(group.id), json=body).get_json()["added"] == 1
    assert api_client.post(URL.format(group.id), json=body).get_json() == {
        "added": 0,
        "alreadyMember": 1,
        "unknownKeys": [],
    }


def test_ten_thousand_keys(api_client):
    group = make_group()
    keys = [f"user{i}@example.com" for i in range(10_000)]
    now = utcnow()
    rows = [
        {"subscriber_key": k, "attributes": {}, "opted_out": False, "created_at": now, "updated_at": now}
        for k in keys[:6000]
    ]
    db.session.execute(insert(Subscriber), rows)
    db.session.commit()
    response = api_client.post(URL.format(group.id), json={"subscriberKeys": keys})
    assert response.status_code == 200
    data = response.get_json()
    assert (data["added"], data["alreadyMember"], len(data["unknownKeys"])) == (6000, 0, 4000)
    assert data["unknownKeys"][0] == "user6000@example.com"
    assert _members(group.id) == 6000


def test_more_than_ten_thousand_keys_is_422(api_client):
    group = make_group()
    keys = [f"u{i}@x.io" for i in range(10_001)]
    response = api_client.post(URL.format(group.id), json={"subscriberKeys": keys})
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "subscriberKeys"


def test_body_limit_is_one_mib(api_client):
    group = make_group()
    keys = ["k" * 200 + str(i) for i in range(6000)]  # about 1.2 MB
    response = api_client.post(
        URL.format(group.id), data=json.dumps({"subscriberKeys": keys}), content_type="application/json"
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "subscriberKeys"),
        ({"subscriberKeys": "anna@example.com"}, "subscriberKeys"),
        ({"subscriberKeys": ["ok@example.com", ""]}, "subscriberKeys[1]"),
        ({"subscriberKeys": ["ok@example.com", 7]}, "subscriberKeys[1]"),
        ({"subscriberKeys": ["a\x00b"]}, "subscriberKeys[0]"),
        ({"subscriberKeys": [], "extra": 1}, "extra"),
    ],
)
def test_invalid_bodies_are_422_and_change_nothing(api_client, body, field):
    anna = make_subscriber("ok@example.com")
    group = make_group()
    response = api_client.post(URL.format(group.id), json=body)
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == field
    assert _members(group.id) == 0 and anna.id


def test_unknown_group_is_404(api_client):
    for method in (api_client.post, api_client.delete):
        response = method(URL.format(999), json={"subscriberKeys": []})
        assert response.status_code == 404
        assert response.get_json()["error"]["field"] == "id"


def test_group_ids_beyond_the_column_range_are_422(api_client):
    for group_id in (2**31, 2**40, 2**64):
        response = api_client.post(URL.format(group_id), json={"subscriberKeys": []})
        assert response.status_code == 422
        assert response.get_json()["error"]["field"] == "id"


def test_malformed_and_wrong_type(api_client):
    group = make_group()
    assert api_client.post(URL.format(group.id), data="[", content_type="application/json").status_code == 400
    assert api_client.post(URL.format(group.id), data="a,b", content_type="text/csv").status_code == 415
