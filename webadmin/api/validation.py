"""Request checks for the API: JSON bodies with size and type limits, and a small JSON Schema subset validator.

The validator reads the same schema dicts that the OpenAPI document publishes, so what the document says
and what the API enforces cannot drift apart. Supported keywords: $ref (to components), type (string or
list), enum, minLength, maxLength, pattern (anchored ^…$, ASCII classes), minimum, maximum, minItems,
maxItems, items, properties, required, additionalProperties, maxProperties, propertyNames and `x-error`
(the message shown when the schema fails).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import request

from webadmin import strict_json
from webadmin.services import ServiceError

KIB = 1024
MIB = 1024 * KIB

STATUS_BY_CODE = {"conflict": 409, "forbidden": 403, "not_found": 404}


class ApiError(Exception):
    """An error answered as {"error": {"code", "message", "field"}} with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code
        self.headers = headers or {}


def camel(name: str | None) -> str | None:
    """A service field name as the API spells it: `time_zone` → `timeZone`."""
    if name is None:
        return None
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def from_service_error(exc: ServiceError) -> ApiError:
    """Map a refused domain operation to its HTTP status (422 unless the code says otherwise)."""
    status = STATUS_BY_CODE.get(exc.code, 422)
    return ApiError(status, exc.message, field=camel(exc.field), code=exc.code if status != 422 else None)


# --- bodies ---------------------------------------------------------------------------------------------


def read_json(limit: int) -> Any:
    """The request's JSON body: 415 unless application/json, 413 above `limit` bytes, 400 when malformed."""
    if request.mimetype != "application/json":
        raise ApiError(415, "Send the body as application/json.")
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"The body is larger than {limit // KIB} KiB.")
    request.max_content_length = limit  # also bounds bodies sent without Content-Length
    data = request.get_data(cache=False)
    try:
        return strict_json.loads(data)  # the CSV import's attributes cells follow the same rules
    except ValueError as exc:
        raise ApiError(400, "The body is not valid JSON.") from exc


# --- schema subset --------------------------------------------------------------------------------------

_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}
_ARTICLES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
    "object": "an object",
    "array": "an array",
}


class SchemaChecker:
    """Validates JSON values against schema dicts; `$ref`s resolve in the given component schemas."""

    def __init__(self, components: dict[str, dict[str, Any]]) -> None:
        self.components = components

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Follow a `$ref` to a component schema."""
        while "$ref" in schema:
            schema = self.components[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def check(self, schema: dict[str, Any], value: Any, field: str | None) -> None:
        """Raise a 422 ApiError naming `field` when `value` does not satisfy `schema`."""
        schema = self.resolve(schema)
        types = schema.get("type")
        names = [types] if isinstance(types, str) else types or []
        if names and not any(_TYPES[name](value) for name in names):
            self.fail(schema, field, f"must be {' or '.join(_ARTICLES[n] for n in names)}")
        if "enum" in schema and not _in_enum(schema["enum"], value):
            self.fail(schema, field, "is not one of the allowed values")
        if isinstance(value, str):
            self._check_string(schema, value, field)
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, int | float):
            self._check_number(schema, value, field)
        elif isinstance(value, list):
            self._check_array(schema, value, field)
        elif isinstance(value, dict):
            self._check_object(schema, value, field)

    @staticmethod
    def fail(schema: dict[str, Any], field: str | None, problem: str) -> None:
        """Raise the 422 for this schema (its `x-error` message when it has one)."""
        message = schema.get("x-error") or f"{field or 'The body'} {problem}."
        raise ApiError(422, message, field=field)

    def _check_string(self, schema: dict[str, Any], value: str, field: str | None) -> None:
        """minLength, maxLength, pattern."""
        if len(value) < schema.get("minLength", 0):
            self.fail(schema, field, f"must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self.fail(schema, field, f"must have at most {schema['maxLength']} characters")
        if "pattern" in schema and not _matches(schema["pattern"], value):
            self.fail(schema, field, "has a form that is not allowed")

    def _check_number(self, schema: dict[str, Any], value: float, field: str | None) -> None:
        """minimum, maximum."""
        if "minimum" in schema and value < schema["minimum"]:
            self.fail(schema, field, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            self.fail(schema, field, f"must be at most {schema['maximum']}")

    def _check_array(self, schema: dict[str, Any], value: list[Any], field: str | None) -> None:
        """minItems, maxItems, items."""
        if len(value) < schema.get("minItems", 0):
            self.fail(schema, field, f"must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            self.fail(schema, field, f"must have at most {schema['maxItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                self.check(schema["items"], item, f"{field or ''}[{index}]")

    def _check_object(self, schema: dict[str, Any], value: dict[str, Any], field: str | None) -> None:
        """required, properties, additionalProperties, maxProperties, propertyNames."""
        prefix = f"{field}." if field else ""
        for name in schema.get("required", []):
            if name not in value:
                raise ApiError(422, f"{prefix}{name} is required.", field=prefix + name)
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            self.fail(schema, field, f"must have at most {schema['maxProperties']} names")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if "propertyNames" in schema:
                self.check(schema["propertyNames"], name, prefix + name)
            if name in properties:
                self.check(properties[name], item, prefix + name)
            elif extra is False:
                raise ApiError(422, f"{prefix}{name} is not a known field.", field=prefix + name)
            elif isinstance(extra, dict):
                self.check(extra, item, prefix + name)


_ENUMS: dict[int, tuple[list[Any], frozenset[tuple[type, Any]]]] = {}


def _in_enum(allowed: list[Any], value: Any) -> bool:
    """JSON equality against enum members (true is not 1), by set lookup: the time zone enum has ~600."""
    cached = _ENUMS.get(id(allowed))
    if cached is None or cached[0] is not allowed:
        cached = _ENUMS[id(allowed)] = (allowed, frozenset((type(item), item) for item in allowed))
    try:
        return (type(value), value) in cached[1]
    except TypeError:  # an object or array is never one of the (scalar) members
        return False


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _matches(pattern: str, value: str) -> bool:
    """ECMA-262 semantics for anchored patterns: `$` is the very end (Python's would allow a final newline)."""
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        compiled = _PATTERNS[pattern] = re.compile(pattern)
    if pattern.startswith("^") and pattern.endswith("$"):
        return compiled.fullmatch(value) is not None
    return compiled.search(value) is not None
