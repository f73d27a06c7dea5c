"""POST /push (idempotency, also concurrent; 409 on key reuse; custom data rules), /share (known sharers, the
configured audience, rate limits per sharer and per app, also concurrent), /templates/{slug}/send, /events."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from tests.api.conftest import client_with_key
from tests.api.factories import make_app, make_device, make_group, make_subscriber
from webadmin.api import messaging
from webadmin.extensions import db
from webadmin.models.audience import Subscriber
from webadmin.models.audit import AuditEvent
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message, Template
from webadmin.models.offer import Offer
from webadmin.services import offers, settings, sharing


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


def _in_threads(calls):
    results = [None] * len(calls)

    def run(index, call):
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def _together(monkeypatch, module, name, when_missing=True):
    """Make two requests both pass `module.name` before either goes on (a barrier with a timeout: where a lock makes
    the second wait for the first, the first goes on alone after the timeout)."""
    barrier, original = threading.Barrier(2), getattr(module, name)

    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        if result is None or not when_missing:
            try:
                barrier.wait(timeout=1.5)
            except threading.BrokenBarrierError:
                pass
        return result

    monkeypatch.setattr(module, name, wrapped)


def test_concurrent_pushes_with_one_idempotency_key_make_one_campaign(app, api_app, api_key, api_client, monkeypatch):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    _together(monkeypatch, messaging, "_existing")
    body = {"messageText": "Once", "subscriberKeys": ["alice@example.com"]}
    clients = [client_with_key(app, api_key[1]) for _ in range(2)]
    answers = _in_threads([lambda c=c: c.post("/api/v1/push", json=body, headers={"Idempotency-Key": "dbl"})
                           for c in clients])
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json["id"] == answers[1].json["id"]
    assert db.session.scalar(select(func.count(Campaign.id))) == 1
    assert db.session.scalar(select(func.count(Message.id))) == 1


def test_push_refuses_custom_data_fcm_would_refuse(api_app, api_client):
    for data in ({"from": "x"}, {"google.c.a": "1"}, {"gcm.n.e": "1"}, {"notification": "y"}, {"openDirect": "z"},
                 {f"k{i}": "v" * 1000 for i in range(5)}):
        answer = api_client.post("/api/v1/push", json={"messageText": "x", "data": data})
        assert answer.status_code == 422 and answer.json["error"]["field"] == "data", (data, answer.json)
    assert db.session.scalar(select(func.count(Campaign.id))) == 0


def test_push_and_share_are_audited(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    offer = _offer(api_app)
    pushed = api_client.post("/api/v1/push", json={"messageText": "Hi"}).json["id"]
    shared = api_client.post("/api/v1/share", json={"sharerKey": "alice@example.com", "sharerName": "Alice",
                                                    "itemId": offer.id}).json["id"]
    rows = dict(db.session.execute(select(AuditEvent.object_id, AuditEvent.actor)
                                   .where(AuditEvent.action == "campaign.send")).all())
    assert set(rows) == {str(pushed), str(shared)} and all(a.startswith("api:") for a in rows.values())


def _offer(api_app, **fields):
    offer = Offer(app_id=api_app.id, name="Chocolate Week", deep_link="nibs://offers/1", **fields)
    db.session.add(offer)
    db.session.commit()
    return offer


def test_share_needs_a_subscriber_with_a_device_in_the_app(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    offer = _offer(api_app)
    elsewhere = make_subscriber("carol@example.com")
    make_device(make_app("Other"), "tok-c", subscriber_id=elsewhere.id)
    for key in ("ghost@example.com", "carol@example.com"):  # unknown; known but not in this app
        answer = api_client.post("/api/v1/share", json={"sharerKey": key, "sharerName": "X", "itemId": offer.id})
        assert answer.status_code == 404
        assert answer.json["error"] == {"code": "not_found", "field": "sharerKey",
                                        "message": "No subscriber with this key has a device in this app."}
    assert db.session.scalar(select(func.count(Campaign.id))) == 0
    ok = api_client.post("/api/v1/share", json={"sharerKey": " Alice@Example.com", "sharerName": "Alice",
                                                "itemId": offer.id})
    assert ok.status_code == 202


def test_share_goes_to_the_group_configured_in_settings(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    offer = _offer(api_app)
    bob = db.session.scalar(select(Subscriber).where(Subscriber.subscriber_key == "bob@example.com"))
    group = make_group("Friends of Bob", [bob])
    settings.put("share.audience", f"group:{group.id}", actor="test")
    answer = api_client.post("/api/v1/share", json={"sharerKey": "alice@example.com", "sharerName": "Alice",
                                                    "itemId": offer.id})
    assert answer.status_code == 202 and answer.json["targeted"] == 1
    campaign = db.session.get(Campaign, answer.json["id"])
    assert campaign.audience["group_ids"] == [group.id]
    assert db.session.scalars(select(Message.recipient)).all() == ["bob@example.com"]
    db.session.delete(group)
    db.session.commit()
    gone = api_client.post("/api/v1/share", json={"sharerKey": "alice@example.com", "sharerName": "Alice",
                                                  "itemId": offer.id})
    assert gone.status_code == 409 and "Settings → Sharing" in gone.json["error"]["message"]


def test_share_cap_per_app_holds_across_sharers(app, api_app, api_client):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    offer = _offer(api_app)
    settings.put("share.max_per_app_per_hour", 2, actor="test")
    for key in ("alice@example.com", "bob@example.com"):
        assert api_client.post("/api/v1/share", json={"sharerKey": key, "sharerName": "X",
                                                      "itemId": offer.id}).status_code == 202
    third = api_client.post("/api/v1/share", json={"sharerKey": "alice@example.com", "sharerName": "X",
                                                   "itemId": offer.id})
    assert third.status_code == 429 and "This app already pushed 2 shares" in third.json["error"]["message"]
    assert int(third.headers["Retry-After"]) > 3500


def test_concurrent_shares_cannot_both_pass_the_limit(app, api_app, api_key, monkeypatch):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    offer = _offer(api_app)
    settings.put("share.max_per_hour", 1, actor="test")
    _together(monkeypatch, sharing, "_check_rate", when_missing=False)  # both counted before either inserted?
    body = {"sharerKey": "alice@example.com", "sharerName": "Alice", "itemId": offer.id}
    clients = [client_with_key(app, api_key[1]) for _ in range(2)]
    answers = _in_threads([lambda c=c: c.post("/api/v1/share", json=body) for c in clients])
    assert sorted(a.status_code for a in answers) == [202, 429]
    assert db.session.scalar(select(func.count(Campaign.id))) == 1


def test_a_shared_product_is_recorded_as_an_offer_and_listed_on_its_page(app, api_app, api_client, login_as):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    product = _offer(api_app, kind="product")
    shared = api_client.post("/api/v1/share", json={"sharerKey": "alice@example.com", "sharerName": "Alice",
                                                    "itemId": product.id}).json["id"]
    campaign = db.session.get(Campaign, shared)
    assert (campaign.related_type, campaign.related_id) == ("offer", str(product.id))
    assert [p.campaign.id for p in offers.pushes_of(product)] == [shared]
    legacy = Campaign(app_id=api_app.id, text="Old share", source="social", related_type="product",
                      related_id=str(product.id))
    db.session.add(legacy)
    db.session.commit()
    assert [p.campaign.id for p in offers.pushes_of(product)] == [legacy.id, shared]  # both conventions read


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
    assert answer.json == {"counted": 2, "duplicates": 1, "unknownMessages": [unknown], "unknownCampaignDevices": []}
    api_client.post("/api/v1/events", json=batch)
    db.session.expire_all()
    assert db.session.scalar(select(Campaign)).opened == 1


def test_a_share_whose_start_fails_pushes_nothing_and_does_not_count(app, api_app, monkeypatch):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    _audience(api_app)
    offer = _offer(api_app)
    settings.put("share.max_per_hour", 1, actor="test")
    from webadmin.services import campaigns

    real = campaigns.materialize

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away while materialising")

    monkeypatch.setattr(campaigns, "materialize", broken)
    try:
        sharing.share(api_app, "alice@example.com", "Alice", offer.id, actor="test")
    except RuntimeError as exc:
        assert "went away" in str(exc)
    else:
        raise AssertionError("the failed start must reach the caller")
    assert db.session.scalar(select(func.count(Campaign.id))) == 0  # its draft is gone, nothing counted
    monkeypatch.setattr(campaigns, "materialize", real)
    campaign = sharing.share(api_app, "alice@example.com", "Alice", offer.id, actor="test")  # within the limit
    assert campaign.targeted == 2 and db.session.scalar(select(func.count(Message.id))) == 2
