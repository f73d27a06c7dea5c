"""PUT /api/v1/subscribers/{key}: create, update, attribute merge, validation, concurrency."""

from __future__ import annotations

import threading
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from tests.api.conftest import client_with_key
from tests.api.factories import make_subscriber
from webadmin.extensions import db
from webadmin.models.audience import Subscriber

URL = "/api/v1/subscribers/{}"


def _subscriber(key: str) -> Subscriber:
    """The subscriber row, fresh from the database."""
    db.session.expire_all()
    return db.session.scalars(select(Subscriber).where(Subscriber.subscriber_key == key)).one()


def _count() -> int:
    """Subscribers stored."""
    return db.session.scalar(select(func.count(Subscriber.id)))


def test_create_then_update(api_client):
    body = {
        "displayName": "Anna Nowak",
        "phone": "+48600100200",
        "locale": "pl-PL",
        "timeZone": "Europe/Warsaw",
        "optedOut": False,
        "attributes": {"city": "Gdańsk", "tier": "gold", "visits": 3, "vip": True},
    }
    created = api_client.put(URL.format("Anna@Example.com"), json=body)
    assert created.status_code == 201
    data = created.get_json()
    assert data["key"] == "anna@example.com"
    assert data["attributes"] == body["attributes"]
    assert (data["phone"], data["timeZone"], data["optedOut"]) == ("+48600100200", "Europe/Warsaw", False)

    updated = api_client.put(URL.format("anna@example.com"), json={"optedOut": True, "phone": None})
    assert updated.status_code == 200
    assert updated.get_json()["optedOut"] is True
    assert updated.get_json()["phone"] is None
    assert updated.get_json()["displayName"] == "Anna Nowak"  # left out: kept
    assert _count() == 1


def test_attributes_merge_and_null_removes(api_client):
    make_subscriber("a@example.com")
    api_client.put(URL.format("a@example.com"), json={"attributes": {"city": "Gdańsk", "tier": "gold"}})
    response = api_client.put(URL.format("a@example.com"), json={"attributes": {"tier": None, "pet": "cat"}})
    assert response.status_code == 200
    assert _subscriber("a@example.com").attributes == {"city": "Gdańsk", "pet": "cat"}


def test_integral_numbers_are_integers(api_client):
    # JSON has one number type: 3.0 is the integer 3 (as JSON Schema counts it); 1.5 stays a fraction.
    response = api_client.put(
        URL.format("n@example.com"),
        data='{"attributes": {"visits": 3.0, "score": 1.5}}',
        content_type="application/json",
    )
    assert response.status_code == 201
    attributes = _subscriber("n@example.com").attributes
    assert attributes == {"visits": 3, "score": 1.5} and isinstance(attributes["visits"], int)


def test_empty_body_creates_a_bare_subscriber(api_client):
    assert api_client.put(URL.format("bare@example.com"), json={}).status_code == 201
    assert api_client.put(URL.format("bare@example.com"), json={}).status_code == 200
    assert _count() == 1


def test_keys_with_slashes_and_spaces_are_url_encoded(api_client):
    key = "o'neil/sales+1@example.com"
    response = api_client.put(URL.format(quote(key, safe="")), json={})
    assert response.status_code == 201
    assert response.get_json()["key"] == key


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone": "600100200"}, "phone"),
        ({"phone": "+0600100200"}, "phone"),
        ({"phone": "+48 600 100 200"}, "phone"),
        ({"phone": "+1234567890123456"}, "phone"),
        ({"locale": "123"}, "locale"),
        ({"timeZone": "CEST"}, "timeZone"),
        ({"optedOut": "yes"}, "optedOut"),
        ({"displayName": "x" * 201}, "displayName"),
        ({"displayName": "line\nbreak"}, "displayName"),
        ({"attributes": []}, "attributes"),
        ({"attributes": {"1st": "x"}}, "attributes.1st"),
        ({"attributes": {"city": {"nested": 1}}}, "attributes.city"),
        ({"attributes": {"city": ["a"]}}, "attributes.city"),
        ({"attributes": {"city": "x" * 1001}}, "attributes.city"),
        ({"attributes": {f"a{i}": i for i in range(101)}}, "attributes"),
        ({"email": "a@example.com"}, "email"),
    ],
)
def test_invalid_fields_are_422_and_change_nothing(api_client, body, field):
    response = api_client.put(URL.format("new@example.com"), json=body)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["field"] == field
    assert _count() == 0


@pytest.mark.parametrize("key", ["%20%20", "a%09b", "x" * 255, "%C2%85"])
def test_invalid_keys_are_422(api_client, key):
    response = api_client.put(URL.format(key), json={})
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "key"


def test_invalid_update_leaves_the_subscriber_alone(api_client):
    make_subscriber("a@example.com", display_name="Before")
    response = api_client.put(URL.format("a@example.com"), json={"displayName": "After", "timeZone": "Nowhere"})
    assert response.status_code == 422
    assert _subscriber("a@example.com").display_name == "Before"


def test_errors_of_the_body(api_client):
    assert api_client.put(URL.format("a@example.com"), data="{", content_type="application/json").status_code == 400
    assert api_client.put(URL.format("a@example.com"), data="{}", content_type="text/plain").status_code == 415
    big = {"displayName": "x", "pad": "y" * (65 * 1024)}
    assert api_client.put(URL.format("a@example.com"), json=big).status_code == 413
    assert _count() == 0


def test_concurrent_creation_of_one_subscriber(app, api_client):
    secret = api_client.secret
    statuses: list[int] = []

    def put(n: int) -> None:
        client = client_with_key(app, secret)
        for i in range(10):
            statuses.append(client.put(URL.format("race@example.com"), json={"attributes": {f"t{n}": i}}).status_code)

    threads = [threading.Thread(target=put, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(set(statuses)) == [200, 201] and statuses.count(201) == 1
    assert _subscriber("race@example.com").attributes == {f"t{n}": 9 for n in range(6)}  # no lost merge
