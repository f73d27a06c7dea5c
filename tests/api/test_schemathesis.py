"""schemathesis over the OpenAPI document: no server errors and no response that contradicts the document.

Runs on SQLite only (the API logic is the same on PostgreSQL; tests/api/test_*.py cover both databases).
"""

from __future__ import annotations

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings

from tests.api.factories import make_api_key, make_app, make_group, make_subscriber
from tests.conftest import build_app
from webadmin.api import openapi
from webadmin.extensions import db

CONFIG = schemathesis.Config.from_dict(
    {
        "base-url": f"http://localhost{openapi.BASE_PATH}",
        "checks": {
            # 413 is how an oversized body is refused (each operation documents it).
            "negative_data_rejection": {"expected-statuses": ["400", "401", "403", "404", "409", "413", "415", "422"]},
        },
        "operations": [
            {
                # `platform` is required only when the token is new, which no JSON Schema can say: a schema-valid
                # body without it gets the documented 422 for an unknown token.
                "include-operation-id": "registerDevice",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "409", "422"]}},
            },
            {
                # scheduledAt must lie in the future and openDirect must use the app's own scheme: rules of time
                # and of stored data that a schema cannot state; the operation documents them as 422.
                "include-operation-id": "push",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "404", "409", "422"]}},
            },
        ],
    }
)
# Loaded from the same Python data the app serves (test_openapi.py checks they are equal); requests go to a
# fresh app per operation through WSGI. (schemathesis.pytest.from_fixture does not run on pytest 9 yet.)
schema = schemathesis.openapi.from_dict(openapi.document(), config=CONFIG)


@pytest.fixture
def seeded_api(tmp_path, monkeypatch) -> tuple[Flask, str]:
    """A fresh SQLite app with an app, a key, groups and subscribers: (flask app, API key)."""
    monkeypatch.setenv("WEBADMIN_INSTANCE_PATH", str(tmp_path / "instance"))
    app = build_app(f"sqlite:///{tmp_path / 'schemathesis.sqlite3'}", tmp_path)
    with app.app_context():
        db.create_all()
        _, secret = make_api_key(make_app("Nibs"))
        subscribers = [make_subscriber(f"user{i}@example.com") for i in range(3)]
        for n in range(3):
            make_group(f"Group {n}", members=subscribers[:n])
        db.session.remove()
    yield app, secret
    with app.app_context():
        db.engine.dispose()


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case, seeded_api):
    app, secret = seeded_api
    case.operation.schema.app = app  # follow-up probes (ignored_auth) use the schema's transport
    case.call_and_validate(app=app, headers={"Authorization": f"Bearer {secret}"})
