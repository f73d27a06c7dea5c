"""API-key authentication: missing, malformed, unknown, wrong and revoked keys; last_used_at throttling."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.api.conftest import client_with_key
from tests.api.factories import make_api_key
from webadmin.extensions import db
from webadmin.models.types import utcnow

URL = "/api/v1/devices/tok-1"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearer nodot",
        "Bearer wa_00000000.secret",
        "Bearer x.y",
        "Bearer wa_" + "0" * 20 + ".secret",
        "Bearer wa_12345678." + "x" * 300,
    ],
)
def test_missing_or_unknown_key_is_401(app, api_client, header):
    client = app.test_client()
    headers = {} if header is None else {"Authorization": header}
    response = client.put(URL, json={"platform": "ios"}, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_right_prefix_wrong_secret_is_401(app, api_client):
    prefix = api_client.secret.split(".")[0]
    response = client_with_key(app, f"{prefix}.not-the-secret").put(URL, json={"platform": "ios"})
    assert response.status_code == 401


def test_revoked_key_is_401(app, api_app):
    _, secret = make_api_key(api_app, revoked_at=utcnow())
    response = client_with_key(app, secret).put(URL, json={"platform": "ios"})
    assert response.status_code == 401
    assert "revoked" in response.get_json()["error"]["message"]


def test_revoking_takes_effect_at_once(app, api_client, api_key):
    assert api_client.put(URL, json={"platform": "ios"}).status_code == 201
    api_key[0].revoked_at = utcnow()
    db.session.commit()
    assert api_client.put(URL, json={"platform": "ios"}).status_code == 401


def test_scheme_is_case_insensitive(app, api_client):
    client = app.test_client()
    response = client.put(URL, json={"platform": "ios"}, headers={"Authorization": f"bearer {api_client.secret}"})
    assert response.status_code == 201


def test_last_used_at_is_written_at_most_once_a_minute(api_client, api_key):
    key = api_key[0]
    api_client.put(URL, json={"platform": "ios"})
    db.session.refresh(key)
    first = key.last_used_at
    assert first is not None
    api_client.put(URL, json={"platform": "ios"})
    db.session.refresh(key)
    assert key.last_used_at == first

    key.last_used_at = utcnow() - timedelta(minutes=2)
    db.session.commit()
    api_client.put(URL, json={"platform": "ios"})
    db.session.refresh(key)
    assert key.last_used_at > first


def test_public_routes_need_no_key(app):
    client = app.test_client()
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/api/v1/openapi.json").status_code == 200
    assert client.get("/api/v1/docs").status_code == 200


def test_unknown_api_route_answers_json_404(api_client):
    response = api_client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_a_request_leaves_no_transaction_open_after_it_ends(app, api_client):
    """The key lookup's read is left open for the route's own statements (one round trip fewer on PostgreSQL): a
    route that then refuses the body, commits nothing, must still leave nothing open once the request ended."""
    answer = api_client.post("/api/v1/events", json={"events": []})
    assert answer.status_code == 422  # authenticated (a bad key is 401), then refused: nothing committed
    if db.engine.dialect.name == "postgresql":
        open_elsewhere = db.session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"))
        assert open_elsewhere == 0
    else:  # nobody holds a lock: another connection's write transaction starts at once
        other = sqlite3.connect(db.engine.url.database, timeout=0)
        try:
            other.execute("BEGIN EXCLUSIVE")
            other.rollback()
        finally:
            other.close()
