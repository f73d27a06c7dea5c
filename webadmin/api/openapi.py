"""The OpenAPI 3.1 document of /api/v1, built from Python data that each API module registers.

A module describes its operations in a `PATHS` dict (path relative to /api/v1 → method → operation, most
easily made with `operation()`) and its named schemas in a `SCHEMAS` dict, then calls
`register(PATHS, SCHEMAS)` at import time. Request schemas double as the validation rules (see
`webadmin.api.validation`), so the document states exactly what the API enforces.
"""

from __future__ import annotations

import copy
from http import HTTPStatus
from typing import Any

from webadmin.api.validation import SchemaChecker
from webadmin.errors import CODES
from webadmin.services import audience

TITLE = "webadmin device registration API"
VERSION = "1.0.0"
BASE_PATH = "/api/v1"

INFO = {
    "title": TITLE,
    "version": VERSION,
    "description": "Apps register push tokens and subscribers with a per-app API key. "
    'Errors are always `{"error": {"code", "message", "field"}}`.',
}
PATHS: dict[str, dict[str, Any]] = {}
SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "description": "Every error answer: a machine code, a message for people, and the offending JSON field.",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "field"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "description": "e.g. " + ", ".join(sorted(set(CODES.values())))},
                    "message": {"type": "string"},
                    "field": {
                        "type": ["string", "null"],
                        "description": "The offending field (`attributes.city`, `subscriberKeys[3]`) or null.",
                    },
                },
            }
        },
    },
}

# Field schemas shared by several operations (devices and subscribers).
SCHEMAS.update(
    {
        "SubscriberKey": {
            "type": "string",
            "minLength": 1,
            "maxLength": audience.KEY_MAX_LENGTH,
            "pattern": audience.KEY_PATTERN,
            "description": "Usually the customer's email. Compared without surrounding blanks and case "
            "(stored stripped and lowercased, at most 254 characters); no control characters.",
            "x-error": "A subscriber key is 1–254 characters, not only blanks, without control characters.",
        },
        "Locale": {
            "type": ["string", "null"],
            "maxLength": audience.LOCALE_MAX_LENGTH,
            "pattern": audience.LOCALE_PATTERN,
            "description": "BCP 47 language tag such as `pl-PL` (`pl_PL` is accepted and stored as `pl-PL`); "
            "null clears it.",
            "x-error": "Use a language tag such as pl-PL.",
        },
        "TimeZone": {
            "type": ["string", "null"],
            "enum": [*sorted(audience.time_zones()), None],
            "description": "IANA time zone name such as `Europe/Warsaw`; null clears it.",
            "x-error": "Use an IANA time zone name such as Europe/Warsaw.",
        },
    }
)

ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON.",
    401: "No API key, an unknown one, or a revoked one.",
    403: "The object belongs to another app.",
    404: "No such object.",
    409: "The request conflicts with the stored state.",
    413: "The body is larger than the operation's limit.",
    415: "The body is not sent as application/json.",
    422: "A field is not valid; `field` names it.",
    429: "Too many requests; retry after the `Retry-After` seconds.",
}

checker = SchemaChecker(SCHEMAS)


def ref(name: str) -> dict[str, str]:
    """A reference to a named schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def path_parameter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A required path parameter."""
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON content map."""
    return {"application/json": {"schema": schema}}


def operation(
    operation_id: str,
    summary: str,
    *,
    description: str = "",
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    body_limit: int | None = None,
    ok: dict[int, tuple[str, dict[str, Any]]],
    errors: tuple[int, ...] = (),
    public: bool = False,
    tag: str = "meta",
    media_type: str = "application/json",
) -> dict[str, Any]:
    """An operation object: `ok` maps success statuses to (description, schema); `errors` lists error statuses."""
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
        if body_limit:
            op["x-body-limit"] = body_limit
    responses: dict[str, Any] = {
        str(s): {"description": d, "content": {media_type: {"schema": schema}}} for s, (d, schema) in ok.items()
    }
    statuses = set(errors) | ({401} if not public else set()) | ({400, 413, 415, 422} if body is not None else set())
    for status in sorted(statuses):
        meaning = ERROR_DESCRIPTIONS.get(status) or HTTPStatus(status).phrase
        responses[str(status)] = {"description": meaning, "content": _json(ref("Error"))}
    op["responses"] = responses
    if public:
        op["security"] = []
    return op


def register(paths: dict[str, dict[str, Any]], schemas: dict[str, dict[str, Any]] | None = None) -> None:
    """Add a module's operations and named schemas to the document (names must not clash)."""
    for name, schema in (schemas or {}).items():
        if name in SCHEMAS and SCHEMAS[name] is not schema:
            raise ValueError(f"OpenAPI schema {name!r} is registered twice")
        SCHEMAS[name] = schema
    for path, operations in paths.items():
        existing = PATHS.setdefault(path, {})
        clash = set(existing) & set(operations)
        if clash:
            raise ValueError(f"OpenAPI operation {sorted(clash)} on {path} is registered twice")
        existing.update(operations)


def document() -> dict[str, Any]:
    """The whole OpenAPI document (a fresh copy, safe to modify)."""
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": INFO,
            "servers": [{"url": BASE_PATH}],
            "security": [{"bearerAuth": []}],
            "paths": dict(sorted(PATHS.items())),
            "components": {
                "schemas": SCHEMAS,
                "securitySchemes": {
                    "bearerAuth": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A per-app key `wa_<8 hex>.<secret>` from Settings → Apps.",
                    }
                },
            },
        }
    )


# --- the readable page ----------------------------------------------------------------------------------


def describe(schema: dict[str, Any]) -> str:
    """A one-line summary of a schema's type and constraints, for the docs page."""
    name = schema["$ref"].rsplit("/", 1)[-1] if "$ref" in schema else None
    schema = checker.resolve(schema)
    types = schema.get("type", "any")
    parts = [" or ".join(types) if isinstance(types, list) else types]
    if name:
        parts[0] = f"{name} ({parts[0]})"
    if "items" in schema:
        parts[0] += f" of {describe(schema['items']).split(',')[0]}"
    if "enum" in schema:
        values = [str(v) for v in schema["enum"] if v is not None]
        parts.append(
            f"one of {', '.join(values)}"
            if len(values) <= 12
            else f"one of {len(values)} values, e.g. " + ", ".join(values[:3])
        )
    for key, label in (
        ("minLength", "≥ {} chars"),
        ("maxLength", "≤ {} chars"),
        ("minimum", "≥ {}"),
        ("maximum", "≤ {}"),
        ("minItems", "≥ {} items"),
        ("maxItems", "≤ {} items"),
        ("maxProperties", "≤ {} names"),
        ("pattern", "pattern {}"),
    ):
        if key in schema:
            parts.append(label.format(schema[key]))
    return ", ".join(parts)


def _rows(schema: dict[str, Any], prefix: str = "") -> list[dict[str, str]]:
    """Field rows for an object schema (one level of nesting through `properties`)."""
    schema = checker.resolve(schema)
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        resolved = checker.resolve(prop)
        rows.append(
            {
                "name": prefix + name,
                "required": "yes" if name in required else "",
                "type": describe(prop),
                "description": resolved.get("description", ""),
            }
        )
        if resolved.get("properties") and not prefix:
            rows.extend(_rows(resolved, prefix + name + "."))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        names = describe(schema["propertyNames"]) if "propertyNames" in schema else "string"
        rows.append(
            {"name": prefix + "<name>", "required": "", "type": describe(extra), "description": f"names: {names}"}
        )
    return rows


def _response_rows(op: dict[str, Any]) -> list[dict[str, str]]:
    """(status, description, schema) rows."""
    rows = []
    for status, response in op["responses"].items():
        media, content = next(iter(response.get("content", {}).items()), ("", {}))
        schema = content.get("schema")
        shown = describe(schema) if media == "application/json" and schema else media
        rows.append({"status": status, "description": response["description"], "schema": shown})
    return rows


def schema_model() -> list[dict[str, Any]]:
    """The named object schemas with their field rows, for the docs page."""
    return [
        {"name": name, "description": schema.get("description", ""), "rows": _rows(schema)}
        for name, schema in sorted(SCHEMAS.items())
        if schema.get("type") == "object"
    ]


def page_model() -> list[dict[str, Any]]:
    """The operations of the document, flattened for `templates/api/docs.html`."""
    ops = []
    for path, methods in sorted(PATHS.items()):
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            ops.append(
                {
                    "method": method.upper(),
                    "path": BASE_PATH + path,
                    "id": op["operationId"],
                    "summary": op["summary"],
                    "description": op.get("description", ""),
                    "public": op.get("security") == [],
                    "parameters": [
                        {
                            "name": p["name"],
                            "in": p["in"],
                            "type": describe(p["schema"]),
                            "description": p.get("description", ""),
                        }
                        for p in op.get("parameters", [])
                    ],
                    "body": _rows(body) if body else None,
                    "body_limit": op.get("x-body-limit"),
                    "responses": _response_rows(op),
                }
            )
    return ops
