"""The session interface: no set-up for cookieless requests, Flask's behaviour for everything else."""

from __future__ import annotations

from flask import session

from webadmin.cookie_session import SessionInterface


def test_cookieless_request_that_writes_the_session_gets_its_cookie_and_can_read_it_back(app):
    assert isinstance(app.session_interface, SessionInterface)

    @app.get("/_test/session/<value>")
    def _write(value):
        previous = session.get("value")
        session["value"] = value
        return {"previous": previous}

    _write.access = app.view_functions["api.health"].access  # public, like the route it copies
    client = app.test_client()
    first = client.get("/_test/session/one")
    assert first.get_json() == {"previous": None}
    assert "session=" in first.headers["Set-Cookie"]  # written although the request had no cookie
    assert client.get("/_test/session/two").get_json() == {"previous": "one"}  # read back from the cookie


def test_api_call_without_cookie_sets_none(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200 and "Set-Cookie" not in response.headers
