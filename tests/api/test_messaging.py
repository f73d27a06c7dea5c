"""POST /push (idempotency, 409 on key reuse), /share (rate limit), /templates/{slug}/send, /events."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.api.factories import make_device, make_subscriber
from webadmin.extensions import db
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message, Template
from webadmin.models.offer import Offer


def _audience(api_app):
    alice, bob = make_subscriber("alice@example.com"), make_subscriber("bob@example.com")
    make_device(api_app, "tok-a", "android", subscriber_id=alice.id)
    make_device(api_app, "tok-b", "ios", subscriber_id=bob.id)


def test_push_to_keys_and_to_all(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    answer = api_client.post("/api/v1/push", json={"messageText": "Hi", "openDirect": "nibs://offers/1",
                                                    "subscriberKeys": ["Alice@Example.com"]})
    assert answer.status_code == 202 and answer.json["targeted"] == 1 and answer.json["status"] == "sent"
    everyone = api_client.post("/api/v1/push", json={"messageText": "Hello all"})
    assert everyone.json["targeted"] == 2 and everyone.json["source"] == "api"


def test_push_idempotency_key(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    body = {"messageText": "Once", "subscriberKeys": ["alice@example.com"]}
    first = api_client.post("/api/v1/push", json=body, headers={"Idempotency-Key": "k-1"})
    again = api_client.post("/api/v1/push", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.json["id"] == again.json["id"]
    assert db.session.scalar(select(func.count(Campaign.id))) == 1
    assert db.session.scalar(select(func.count(Message.id))) == 1
    changed = api_client.post("/api/v1/push", json={**body, "messageText": "Twice"}, headers={"Idempotency-Key": "k-1"})
    assert changed.status_code == 409 and changed.json["error"]["field"] == "Idempotency-Key"
    assert db.session.scalar(select(func.count(Campaign.id))) == 1


def test_push_refuses_bad_input_without_writing(api_app, api_client):
    for body in ({}, {"messageText": ""}, {"messageText": "x", "openDirect": "javascript:alert(1)"},
                 {"messageText": "x", "scheduledAt": "2001-01-01T00:00:00Z"}, {"messageText": "x", "ttl": -1}):
        answer = api_client.post("/api/v1/push", json=body)
        assert answer.status_code == 422, (body, answer.json)
    assert db.session.scalar(select(func.count(Campaign.id))) == 0


def test_share_is_rate_limited_per_sharer(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    offer = Offer(app_id=api_app.id, name="Chocolate Week", deep_link="nibs://offers/1")
    db.session.add(offer)
    db.session.commit()
    body = {"sharerKey": "alice@example.com", "sharerName": "Alice", "itemId": offer.id}
    for _ in range(5):
        answer = api_client.post("/api/v1/share", json=body)
        assert answer.status_code == 202 and answer.json["source"] == "social"
    campaign = db.session.scalar(select(Campaign))
    assert campaign.text == "Alice shared Chocolate Week" and campaign.open_direct == "nibs://offers/1"
    limited = api_client.post("/api/v1/share", json=body)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    other = api_client.post("/api/v1/share", json={**body, "sharerKey": "bob@example.com", "sharerName": "Bob"})
    assert other.status_code == 202
    assert api_client.post("/api/v1/share", json={**body, "itemId": 999}).status_code == 404


def test_send_template(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    db.session.add_all([Template(slug="welcome", title="Hi {{ name }}", body="Welcome, {{ name }}!"),
                        Template(slug="off", body="x", is_active=False)])
    db.session.commit()
    sent = api_client.post("/api/v1/templates/welcome/send",
                           json={"recipient": "alice@example.com", "contextData": {"name": "Alice"}})
    assert sent.status_code == 200 and sent.json["sent"] is True and len(sent.json["messages"]) == 1
    message = db.session.scalar(select(Message))
    assert (message.content, message.heading, message.template_slug) == ("Welcome, Alice!", "Hi Alice", "welcome")
    inactive = api_client.post("/api/v1/templates/off/send", json={"recipient": "alice@example.com"})
    assert inactive.json == {"sent": False, "messages": []}
    missing = api_client.post("/api/v1/templates/nope/send", json={"recipient": "alice@example.com"})
    assert missing.status_code == 404
    broken = api_client.post("/api/v1/templates/welcome/send", json={"recipient": "alice@example.com"})
    assert broken.status_code == 422  # `name` is undefined: refused clearly, nothing sent
    assert db.session.scalar(select(func.count(Message.id))) == 1


def test_events_count_an_open_once(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    api_client.post("/api/v1/push", json={"messageText": "Hi"})
    uuids = list(db.session.scalars(select(Message.uuid)))
    unknown = "00000000-0000-4000-8000-000000000000"
    batch = {"events": [{"message": uuids[0], "type": "opened"}, {"message": uuids[0], "type": "opened"},
                        {"message": uuids[1], "type": "received"}, {"message": unknown, "type": "opened"}]}
    answer = api_client.post("/api/v1/events", json=batch)
    assert answer.status_code == 200
    assert answer.json == {"counted": 2, "duplicates": 1, "unknownMessages": [unknown]}
    api_client.post("/api/v1/events", json=batch)
    db.session.expire_all()
    assert db.session.scalar(select(Campaign)).opened == 1
