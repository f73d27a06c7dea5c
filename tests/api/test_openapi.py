"""The OpenAPI document: valid 3.1, served as built, covering exactly the /api/v1 routes; the docs page."""

from __future__ import annotations

import re

import jsonschema_rs
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31

from webadmin.api import openapi
from webadmin.api.devices import TOKEN
from webadmin.api.openapi import checker, ref
from webadmin.api.validation import ApiError

METHODS = {"get", "put", "post", "delete", "patch"}


def _rule_to_openapi(rule: str) -> str:
    """/api/v1/groups/<int:group_id>/members → /groups/{id}/members (the document's names)."""
    path = rule.removeprefix(openapi.BASE_PATH)
    converter = r"(?:\w+(?:\([^)]*\))?:)?"  # int:, int(max=None):, path:, …
    path = re.sub(rf"<{converter}group_id>", "{id}", path)
    return re.sub(rf"<{converter}(\w+)>", r"{\1}", path)


def test_document_is_valid_openapi_31():
    document = openapi.document()
    jsonschema_rs.validator_for(OPENAPI_31).validate(document)
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name


def test_served_document_is_the_built_one(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.get_json() == openapi.document()


def test_every_api_route_is_documented_and_nothing_else(app):
    routes = {
        (_rule_to_openapi(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(openapi.BASE_PATH + "/")
        for method in rule.methods & {m.upper() for m in METHODS}
    }
    documented = {(path, method) for path, ops in openapi.PATHS.items() for method in ops}
    assert routes == documented


def test_every_operation_documents_auth_and_errors():
    for path, ops in openapi.PATHS.items():
        for method, op in ops.items():
            responses = op["responses"]
            if op.get("security") != []:
                assert "401" in responses, (path, method)
            if "requestBody" in op:
                assert {"400", "413", "415", "422"} <= set(responses), (path, method)
            for status, response in responses.items():
                if status >= "400":
                    assert response["content"]["application/json"]["schema"] == ref("Error")


def test_register_refuses_clashes():
    with pytest.raises(ValueError, match="registered twice"):
        openapi.register({"/devices/{token}": {"put": {}}})
    with pytest.raises(ValueError, match="registered twice"):
        openapi.register({}, {"Device": {"type": "object"}})


def test_docs_page_shows_every_operation_and_schema(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for path, ops in openapi.PATHS.items():
        for op in ops.values():
            assert f'id="{op["operationId"]}"' in html
            assert f"{openapi.BASE_PATH}{path}" in html
    for name in ("Device", "DeviceRegistration", "SubscriberUpdate", "MembersAdded", "Error"):
        assert f'id="schema-{name}"' in html
    assert "≤ 10000 items" in html and "Body limit: 1024 KiB" in html


# The hand-written validator must agree with a real JSON Schema validator on the published schemas,
# including where Python's and ECMA-262's regular expressions differ (`$` before a final newline, \s).
TRICKY_STRINGS = [
    "",
    " ",
    "a",
    "A@Example.com",
    "a\n",
    "a\r",
    "\n",
    "\u0085",
    "a\u0085",
    "\ufeff",
    "\u00a0",
    "\u3000x",
    "x" * 254,
    "x" * 255,
    "\u0130",
    "pl-PL",
    "pl_PL",
    "pl-PL\n",
    "+48600100200",
    "+48600100200\n",
    "+0600",
    "Europe/Warsaw",
    "europe/warsaw",
    "Factory",
    ".x",
    "a:b~c-d_e.f",
    "ümlaut",
    "tab\there",
    "1st",
]
SCHEMAS = [
    ref("SubscriberKey"),
    ref("Locale"),
    ref("TimeZone"),
    TOKEN,
    openapi.SCHEMAS["SubscriberUpdate"]["properties"]["phone"],
    openapi.SCHEMAS["SubscriberUpdate"]["properties"]["displayName"],
    openapi.SCHEMAS["SubscriberUpdate"]["properties"]["attributes"]["propertyNames"],
]


def _ours(schema: dict, value: object) -> bool:
    """Whether webadmin's validator accepts the value."""
    try:
        checker.check(schema, value, "x")
    except ApiError:
        return False
    return True


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.get("$ref", "inline").rsplit("/", 1)[-1])
def test_validator_agrees_with_json_schema(schema):
    resolved = checker.resolve(schema)
    reference = jsonschema_rs.validator_for(resolved)
    disagreements = [v for v in TRICKY_STRINGS + [None, 1, True] if _ours(schema, v) != reference.is_valid(v)]
    assert disagreements == []


def test_validator_agrees_on_bodies():
    body_schema = openapi.SCHEMAS["SubscriberUpdate"]
    document = openapi.document()
    bodies = [
        {},
        {"optedOut": 1},
        {"optedOut": True},
        {"attributes": {"a": 1.5, "b": None, "c": "x"}},
        {"attributes": {"a": [1]}},
        {"attributes": {"a": "x" * 1001}},
        {"unknown": 1},
        {"timeZone": None},
        {"timeZone": "Europe/Warsaw"},
        {"timeZone": "Mars/Base"},
        {"phone": None},
        {"displayName": "a\u0085"},
    ]
    schema = {**body_schema, "components": document["components"]}  # so "#/components/schemas/…" resolves
    reference = jsonschema_rs.validator_for(schema)
    for body in bodies:
        assert _ours(body_schema, body) == reference.is_valid(body), body
