"""Every keyed API operation × every client error it documents: the status, the JSON error shape, nothing changed.

The operations and their statuses come from the OpenAPI document, so a new operation fails here until it has
a row in CALLS. The database is seeded once per backend for the module (nothing may change it, and each case
compares the whole database before and after its request), which keeps ~100 cases to a few seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text

from tests.api.factories import make_api_key, make_app, make_device, make_group, make_subscriber
from tests.conftest import build_app
from tests.environment import need
from webadmin.api import openapi
from webadmin.extensions import db
from webadmin.models.message import Template

# Bookkeeping, not data: a presented valid key records when it was last used, even on a refused request.
NOT_DATA = {("api_keys", "last_used_at")}
ERRORS = (400, 401, 413, 415, 422)


@dataclass(frozen=True)
class Call:
    """How to call one operation: a request it accepts, and one it refuses with 422 naming `field`."""

    method: str
    path: str  # formatted with the seeded ids: {group}
    body: dict[str, Any] | None  # None: the operation takes no body
    invalid_path: str | None = None  # when the 422 comes from the path rather than the body
    invalid_body: dict[str, Any] | None = None
    field: str = ""


CALLS = {
    "registerDevice": Call("PUT", "/devices/tok-new", {"platform": "android", "subscriberKey": "new@example.com"},
                           invalid_body={"platform": "tv"}, field="platform"),
    "unsubscribeDevice": Call("DELETE", "/devices/tok-1", None, invalid_path="/devices/not%20a%20token",
                              field="token"),
    "reportEvents": Call("POST", "/events", {"events": [{"message": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
                                                         "type": "opened"}]},
                         invalid_body={"events": []}, field="events"),
    "addGroupMembers": Call("POST", "/groups/{group}/members", {"subscriberKeys": ["bob@example.com"]},
                            invalid_body={"subscriberKeys": ["bob@example.com", 7]}, field="subscriberKeys[1]"),
    "removeGroupMembers": Call("DELETE", "/groups/{group}/members", {"subscriberKeys": ["anna@example.com"]},
                               invalid_body={"subscriberKeys": "anna@example.com"}, field="subscriberKeys"),
    "push": Call("POST", "/push", {"messageText": "Truffles are back"}, invalid_body={"messageText": " "},
                 field="messageText"),
    "share": Call("POST", "/share", {"sharerKey": "anna@example.com", "sharerName": "Anna", "itemId": 1},
                  invalid_body={"sharerKey": "anna@example.com", "itemId": 1}, field="sharerName"),
    "upsertSubscriber": Call("PUT", "/subscribers/new@example.com", {"displayName": "New"},
                             invalid_body={"phone": "600100200"}, field="phone"),
    "sendTemplate": Call("POST", "/templates/welcome/send", {"recipient": "anna@example.com"},
                         invalid_body={"recipient": ""}, field="recipient"),
}  # fmt: skip


def _keyed_operations() -> dict[str, dict[str, Any]]:
    """operationId → operation object, for every operation that needs an API key."""
    paths = openapi.document()["paths"]
    return {op["operationId"]: op for ops in paths.values() for op in ops.values() if op.get("security") != []}


def _cases() -> Iterator[Any]:
    """(operationId, case) for each error status the operation documents; 401 twice (no key, a wrong key)."""
    for operation_id, op in sorted(_keyed_operations().items()):
        for status in ERRORS:
            if str(status) not in op["responses"]:
                continue
            for case in ("401-no-key", "401-wrong-key") if status == 401 else (str(status),):
                yield pytest.param(operation_id, case, id=f"{operation_id}-{case}")


def test_every_keyed_operation_has_a_call():
    assert sorted(CALLS) == sorted(_keyed_operations())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request, tmp_path_factory, postgres_schema) -> Iterator[tuple[Flask, str, dict[str, int]]]:
    """One app per backend for the module, seeded once: (flask app, API key, ids for the paths)."""
    tmp = tmp_path_factory.mktemp(f"api-errors-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'errors.sqlite3'}"
    else:
        need(postgres_schema is not None, "PostgreSQL not configured (set WEBADMIN_TEST_DATABASE_URL)")
        url = postgres_schema
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WEBADMIN_INSTANCE_PATH", str(tmp / "instance"))
        app = build_app(url, tmp)
        with app.app_context():
            if request.param == "sqlite":
                db.create_all()
            push_app = make_app("Nibs")
            _, secret = make_api_key(push_app)
            anna, _bob = make_subscriber("anna@example.com"), make_subscriber("bob@example.com")
            make_device(push_app, "tok-1", subscriber_id=anna.id)
            ids = {"group": make_group("Key customers", members=[anna]).id}
            db.session.add(Template(slug="welcome", body="Hi {{ name }}"))
            db.session.commit()
            db.session.remove()
        yield app, secret, ids
        with app.app_context():
            if request.param == "postgresql":
                names = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
                with db.engine.begin() as conn:
                    conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            db.engine.dispose()


def _database() -> dict[str, list[str]]:
    """Every row of every table (but NOT_DATA columns), as sorted text: equal before and after means unchanged."""
    rows = {}
    for table in db.metadata.sorted_tables:
        columns = [column for column in table.c if (table.name, column.name) not in NOT_DATA]
        rows[table.name] = sorted(repr(tuple(row)) for row in db.session.execute(select(*columns)))
    db.session.rollback()
    return rows


def _request(operation_id: str, case: str, secret: str, ids: dict[str, int]) -> dict[str, Any]:
    """The keyword arguments of the test client's `open` for this case."""
    call = CALLS[operation_id]
    path, content_type = call.path, "application/json"
    data = None if call.body is None else json.dumps(call.body)
    if case == "400":
        data = data[:-1]  # cut short: not JSON any more
    elif case == "415":
        content_type = "text/plain"
    elif case == "413":  # a body the operation accepts, padded past the limit the document states
        data = json.dumps({**call.body, "pad": "x" * _keyed_operations()[operation_id]["x-body-limit"]})
    elif case == "422":
        path = call.invalid_path or path
        data = None if call.invalid_body is None else json.dumps(call.invalid_body)
    key = {"401-no-key": None, "401-wrong-key": "wa_00000000.wrong"}.get(case, secret)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    kwargs: dict[str, Any] = {"path": "/api/v1" + path.format(**ids), "method": call.method, "headers": headers}
    if data is not None:
        kwargs.update(data=data, content_type=content_type)
    return kwargs


@pytest.mark.parametrize(("operation_id", "case"), list(_cases()))
def test_client_errors_answer_the_error_shape_and_change_nothing(seeded, operation_id, case):
    app, secret, ids = seeded
    call = CALLS[operation_id]
    client = app.test_client()
    with app.app_context():
        before = _database()
        response = client.open(**_request(operation_id, case, secret, ids))
        after = _database()
    status = int(case[:3])
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert set(response.get_json()) == {"error"} and set(error) == {"code", "message", "field"}
    assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str) and error["message"]
    if status == 422:
        assert error["field"] == call.field
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert after == before
