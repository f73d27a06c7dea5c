"""API fixtures: an app with a key, and a test client that presents it."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.api.factories import make_api_key, make_app
from webadmin.models.app import ApiKey, App


def client_with_key(app: Flask, secret: str) -> FlaskClient:
    """A test client that sends `Authorization: Bearer <secret>` on every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return client


@pytest.fixture
def api_app(app: Flask) -> App:
    """The app (in the push sense) whose key the API client presents."""
    return make_app("Nibs")


@pytest.fixture
def api_key(api_app: App) -> tuple[ApiKey, str]:
    """(key row, full secret) for `api_app`."""
    return make_api_key(api_app)


@pytest.fixture
def api_client(app: Flask, api_key: tuple[ApiKey, str]) -> FlaskClient:
    """A client authenticated as `api_app` (secret in `api_client.secret`)."""
    client = client_with_key(app, api_key[1])
    client.secret = api_key[1]
    return client
