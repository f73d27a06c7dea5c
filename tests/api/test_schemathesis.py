"""schemathesis over the OpenAPI document: no server errors and no response that contradicts the document.

Runs on SQLite only (the API logic is the same on PostgreSQL; tests/api/test_*.py cover both databases).
Hypothesis's max_examples is a ceiling (it stops early when it runs out of new inputs), so the test counts
the generated examples of each operation and fails an operation with inputs that got fewer than
MIN_EXAMPLES; the coverage phase's boundary cases come on top.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import ignored_auth

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


MIN_EXAMPLES = 100
MAX_EXAMPLES = 150  # headroom above the floor: Hypothesis skips inputs it has tried already


@dataclass
class Examples:
    """What one operation's test ran: examples by phase, and whether a 2xx already proved auth is enforced."""

    label: str = ""
    phases: Counter[str] = field(default_factory=Counter)
    auth_enforced: bool = False


def _has_inputs(label: str) -> bool:
    """Whether the operation ("PUT /devices/{token}") takes parameters or a body."""
    method, path = label.split(" ", 1)
    operation = openapi.document()["paths"][path][method.lower()]
    return "parameters" in operation or "requestBody" in operation


@pytest.fixture
def examples() -> Iterator[Examples]:
    """The operation's example counts; once its examples have run, one with inputs must have had MIN_EXAMPLES."""
    seen = Examples()
    yield seen
    if seen.label and _has_inputs(seen.label):
        fuzzed = seen.phases["fuzzing"]
        assert fuzzed >= MIN_EXAMPLES, f"{seen.label}: {fuzzed} generated examples, fewer than {MIN_EXAMPLES}"


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case, seeded_api, examples):
    examples.label = case.operation.label
    examples.phases[case.meta.phase.name.value if case.meta else "unknown"] += 1
    app, secret = seeded_api
    case.operation.schema.app = app  # follow-up probes (ignored_auth) use the schema's transport
    # ignored_auth re-sends each 2xx case without and with a wrong key. Enforcement is a property of the
    # operation (schemathesis's own runner also confirms it once per operation), and test_errors.py checks
    # 401 for every keyed operation: after one confirmation, the probes only tripled the requests.
    excluded = [ignored_auth] if examples.auth_enforced else []
    response = case.call_and_validate(app=app, headers={"Authorization": f"Bearer {secret}"}, excluded_checks=excluded)
    examples.auth_enforced = examples.auth_enforced or 200 <= response.status_code < 300
