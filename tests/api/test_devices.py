"""PUT/DELETE /api/v1/devices/{token}: registration, idempotency, reactivation, moves, errors, concurrency."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.api.conftest import client_with_key
from tests.api.factories import make_api_key, make_app, make_device, make_subscriber
from webadmin.extensions import db
from webadmin.models.audience import Device, Subscriber
from webadmin.models.types import utcnow

URL = "/api/v1/devices/{}"


def _device(token: str) -> Device:
    """The device row for a token (fresh from the database)."""
    db.session.expire_all()
    return db.session.scalars(select(Device).where(Device.token == token)).one()


def _count(model) -> int:
    """Rows in a table."""
    return db.session.scalar(select(func.count()).select_from(model))


def test_register_creates_then_updates(api_client, api_app):
    body = {"platform": "ios", "subscriberKey": " Anna@Example.com ", "locale": "pl_PL", "timeZone": "Europe/Warsaw"}
    created = api_client.put(URL.format("tok-1"), json={**body, "appVersion": "4.2.1"})
    assert created.status_code == 201
    device = created.get_json()
    assert device["subscriberKey"] == "anna@example.com"
    assert device["locale"] == "pl-PL"
    assert (device["status"], device["platform"], device["appVersion"]) == ("active", "ios", "4.2.1")

    updated = api_client.put(URL.format("tok-1"), json={"appVersion": "4.3.0"})
    assert updated.status_code == 200
    assert updated.get_json()["appVersion"] == "4.3.0"
    assert updated.get_json()["subscriberKey"] == "anna@example.com"  # left out: kept
    assert updated.get_json()["createdAt"] == device["createdAt"]
    row = _device("tok-1")
    assert row.app_id == api_app.id and row.time_zone == "Europe/Warsaw"
    assert _count(Device) == 1 and _count(Subscriber) == 1


def test_register_is_idempotent(api_client):
    body = {"platform": "android", "subscriberKey": "a@example.com"}
    statuses = [api_client.put(URL.format("tok-1"), json=body).status_code for _ in range(3)]
    assert statuses == [201, 200, 200]
    assert _count(Device) == 1 and _count(Subscriber) == 1


def test_reregistering_an_invalid_token_reactivates_it(api_client, api_app):
    old = utcnow() - timedelta(days=3)
    make_device(
        api_app, "tok-1", status="invalid", invalid_reason="Unregistered", invalidated_at=old, registered_at=old
    )
    response = api_client.put(URL.format("tok-1"), json={"platform": "android"})
    assert response.status_code == 200
    assert response.get_json()["status"] == "active"
    row = _device("tok-1")
    assert (row.status, row.invalid_reason, row.invalidated_at) == ("active", None, None)
    assert row.registered_at > old


def test_reregistering_an_unsubscribed_token_reactivates_it(api_client):
    api_client.put(URL.format("tok-1"), json={"platform": "web"})
    assert api_client.delete(URL.format("tok-1")).get_json()["status"] == "unsubscribed"
    assert api_client.put(URL.format("tok-1"), json={}).get_json()["status"] == "active"


def test_a_token_moves_to_another_subscriber(api_client):
    api_client.put(URL.format("tok-1"), json={"platform": "ios", "subscriberKey": "old@example.com"})
    response = api_client.put(URL.format("tok-1"), json={"subscriberKey": "new@example.com"})
    assert response.get_json()["subscriberKey"] == "new@example.com"
    old = db.session.scalars(select(Subscriber).where(Subscriber.subscriber_key == "old@example.com")).one()
    new = db.session.scalars(select(Subscriber).where(Subscriber.subscriber_key == "new@example.com")).one()
    assert old.devices == [] and [d.token for d in new.devices] == ["tok-1"]
    assert _count(Device) == 1


def test_null_subscriber_key_detaches_the_device(api_client):
    api_client.put(URL.format("tok-1"), json={"platform": "ios", "subscriberKey": "a@example.com"})
    response = api_client.put(URL.format("tok-1"), json={"subscriberKey": None, "locale": None})
    assert response.status_code == 200
    assert response.get_json()["subscriberKey"] is None
    assert _device("tok-1").subscriber_id is None


def test_an_existing_subscriber_is_reused(api_client):
    subscriber = make_subscriber("known@example.com", display_name="Known")
    api_client.put(URL.format("tok-1"), json={"platform": "ios", "subscriberKey": "KNOWN@example.com"})
    assert _device("tok-1").subscriber_id == subscriber.id
    assert _count(Subscriber) == 1


def test_tokens_are_per_app(app, api_client, api_app):
    other_client = client_with_key(app, make_api_key(make_app("Other"))[1])
    assert api_client.put(URL.format("tok-1"), json={"platform": "ios"}).status_code == 201
    assert other_client.put(URL.format("tok-1"), json={"platform": "ios"}).status_code == 201
    assert _count(Device) == 2
    assert other_client.delete(URL.format("tok-1")).status_code == 200
    assert _device_of(api_app.id, "tok-1").status == "active"


def _device_of(app_id: int, token: str) -> Device:
    """The device of one app."""
    db.session.expire_all()
    return db.session.scalars(select(Device).where(Device.app_id == app_id, Device.token == token)).one()


def test_platform_is_required_for_a_new_token(api_client):
    response = api_client.put(URL.format("tok-1"), json={"subscriberKey": "a@example.com"})
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "platform"
    assert _count(Device) == 0 and _count(Subscriber) == 0  # nothing half-written


def test_a_token_keeps_its_platform(api_client):
    api_client.put(URL.format("tok-1"), json={"platform": "ios"})
    response = api_client.put(URL.format("tok-1"), json={"platform": "android", "subscriberKey": "x@example.com"})
    assert response.status_code == 409
    assert response.get_json()["error"] == {
        "code": "conflict",
        "message": "This token is registered for ios.",
        "field": "platform",
    }
    assert _device("tok-1").subscriber_id is None and _count(Subscriber) == 0


def test_platform_must_be_one_the_app_ships_on(app):
    client = client_with_key(app, make_api_key(make_app("Android only", platforms=("android",)))[1])
    response = client.put(URL.format("tok-1"), json={"platform": "web"})
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "platform"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"platform": "blackberry"}, "platform"),
        ({"platform": "ios", "timeZone": "Mars/Olympus"}, "timeZone"),
        ({"platform": "ios", "timeZone": "europe/warsaw"}, "timeZone"),
        ({"platform": "ios", "locale": "polish please"}, "locale"),
        ({"platform": "ios", "locale": "pl-PL\n"}, "locale"),
        ({"platform": "ios", "appVersion": "x" * 41}, "appVersion"),
        ({"platform": "ios", "appVersion": "1.0\x00"}, "appVersion"),
        ({"platform": "ios", "subscriberKey": "   "}, "subscriberKey"),
        ({"platform": "ios", "subscriberKey": "a\tb@example.com"}, "subscriberKey"),
        ({"platform": "ios", "subscriberKey": "x" * 255}, "subscriberKey"),
        ({"platform": "ios", "subscriberKey": 42}, "subscriberKey"),
        ({"platform": "ios", "deviceModel": "Pixel"}, "deviceModel"),
        ({"platform": None}, "platform"),
    ],
)
def test_invalid_fields_are_422_and_change_nothing(api_client, body, field):
    response = api_client.put(URL.format("tok-1"), json=body)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["field"] == field
    assert response.get_json()["error"]["code"] == "unprocessable"
    assert _count(Device) == 0 and _count(Subscriber) == 0


@pytest.mark.parametrize("token", [".hidden", "a b", "x" * 1025, "ünïcode"])
def test_invalid_tokens_are_422(api_client, token):
    response = api_client.put(URL.format(token), json={"platform": "ios"})
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "token"


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": "{not json", "content_type": "application/json"}, 400),
        ({"data": '{"platform": NaN}', "content_type": "application/json"}, 400),
        ({"data": '{"appVersion": "\\ud800"}', "content_type": "application/json"}, 400),
        ({"data": "[" * 100_000, "content_type": "application/json"}, 413),
        ({"data": "[" * 30_000 + "]" * 30_000, "content_type": "application/json"}, 400),
        ({"data": b"\xff\xfe", "content_type": "application/json"}, 400),
        ({"data": "platform=ios", "content_type": "application/x-www-form-urlencoded"}, 415),
        ({}, 415),
        ({"json": ["platform", "ios"]}, 422),
        ({"json": "ios"}, 422),
    ],
)
def test_malformed_bodies(api_client, kwargs, status):
    response = api_client.put(URL.format("tok-1"), **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    assert set(response.get_json()["error"]) == {"code", "message", "field"}
    assert _count(Device) == 0


def test_body_limit_is_64_kib(api_client):
    padding = " " * (64 * 1024)
    response = api_client.put(
        URL.format("tok-1"), data='{"platform": "ios"}' + padding, content_type="application/json"
    )
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


def test_unsubscribe(api_client):
    api_client.put(URL.format("tok-1"), json={"platform": "android", "subscriberKey": "a@example.com"})
    response = api_client.delete(URL.format("tok-1"))
    assert response.status_code == 200
    assert response.get_json()["status"] == "unsubscribed"
    assert response.get_json()["subscriberKey"] == "a@example.com"
    assert api_client.delete(URL.format("tok-1")).status_code == 200  # idempotent
    assert _device("tok-1").status == "unsubscribed"


def test_unsubscribe_unknown_token_is_404(api_client):
    response = api_client.delete(URL.format("nope"))
    assert response.status_code == 404
    assert response.get_json()["error"]["field"] == "token"


def test_unsubscribe_a_token_of_another_app_is_403(app, api_client):
    make_device(make_app("Other"), "theirs")
    response = api_client.delete(URL.format("theirs"))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"
    assert _device("theirs").status == "active"


def test_concurrent_registration_of_one_token_leaves_one_row(app, api_client):
    secret = api_client.secret
    statuses: list[int] = []
    lock = threading.Lock()
    body = {"platform": "android", "subscriberKey": "racer@example.com", "timeZone": "Europe/Warsaw"}

    def register() -> None:
        client = client_with_key(app, secret)  # own client, own app context and session per request
        for _ in range(20):
            status = client.put(URL.format("shared-token"), json=body).status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=register) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(statuses) == 160
    assert set(statuses) <= {200, 201}, sorted(set(statuses))
    assert statuses.count(201) == 1
    assert _count(Device) == 1 and _count(Subscriber) == 1


def test_concurrent_first_registrations_of_many_tokens(app, api_client):
    secret = api_client.secret
    failures: list[int] = []

    def register(n: int) -> None:
        client = client_with_key(app, secret)
        for i in range(10):
            body = {"platform": "ios", "subscriberKey": f"user{i % 3}@example.com"}
            status = client.put(URL.format(f"tok-{i}"), json=body).status_code
            if status not in (200, 201):
                failures.append(status)

    threads = [threading.Thread(target=register, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    assert _count(Device) == 10 and _count(Subscriber) == 3


def test_reregistration_refreshes_what_was_sent_and_keeps_the_rest(api_client):
    """The common call (same token, same subscriber, still active) is the short statement: it must still store
    every field sent, move the registration time and keep created_at and the rest."""
    body = {"platform": "ios", "subscriberKey": "a@example.com", "locale": "pl-PL", "timeZone": "UTC"}
    first = api_client.put(URL.format("tok-1"), json={**body, "appVersion": "1.0"}).get_json()
    again = api_client.put(URL.format("tok-1"), json={**body, "timeZone": "Europe/Warsaw", "appVersion": "1.1"})
    assert again.status_code == 200
    device = again.get_json()
    assert (device["timeZone"], device["appVersion"], device["locale"]) == ("Europe/Warsaw", "1.1", "pl-PL")
    assert device["subscriberKey"] == "a@example.com" and device["createdAt"] == first["createdAt"]
    assert device["registeredAt"] > first["registeredAt"]
    row = _device("tok-1")
    assert (row.time_zone, row.app_version, row.locale, row.status) == ("Europe/Warsaw", "1.1", "pl-PL", "active")
    assert _count(Device) == 1 and _count(Subscriber) == 1


def test_an_active_device_with_a_leftover_invalid_reason_is_cleared(api_client, api_app):
    """Only a clean active device takes the short statement; anything else is written in full."""
    make_device(api_app, "tok-1", status="active", invalid_reason="Unregistered", invalidated_at=utcnow())
    assert api_client.put(URL.format("tok-1"), json={"platform": "android"}).status_code == 200
    row = _device("tok-1")
    assert (row.status, row.invalid_reason, row.invalidated_at) == ("active", None, None)


def test_stored_times_read_and_compare_like_orm_written_ones(api_client, api_app):
    """The registration writes timestamps itself: the ORM must read them back as the same aware UTC instants,
    and SQL comparisons against ORM-bound times (SQLite compares the stored text) must hold."""
    before = utcnow()
    device = api_client.put(URL.format("tok-1"), json={"platform": "ios"}).get_json()
    after = utcnow()
    row = _device("tok-1")
    assert row.registered_at.isoformat() == device["registeredAt"] and row.created_at.isoformat() == device["createdAt"]
    assert before <= row.registered_at <= after and row.registered_at.utcoffset() == timedelta(0)
    between = select(Device.token).where(Device.registered_at >= before, Device.registered_at <= after)
    assert db.session.scalars(between).all() == ["tok-1"]
    older = make_device(api_app, "tok-0", registered_at=before - timedelta(microseconds=1))
    order = select(Device.token).order_by(Device.registered_at)
    assert db.session.scalars(order).all() == [older.token, "tok-1"]
