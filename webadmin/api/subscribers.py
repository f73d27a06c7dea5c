"""PUT /api/v1/subscribers/{key}: apps create or update a subscriber's profile and attributes."""

from __future__ import annotations

from typing import Any

from flask import jsonify

from webadmin.access import api_key
from webadmin.api import bp, openapi
from webadmin.api.openapi import checker, ref
from webadmin.api.validation import KIB, read_json
from webadmin.models.audience import Subscriber
from webadmin.services import audience

BODY_LIMIT = 64 * KIB
_NULLABLE_STRING = {"type": ["string", "null"]}

SCHEMAS: dict[str, dict[str, Any]] = {
    "SubscriberUpdate": {
        "type": "object",
        "additionalProperties": False,
        "description": "Fields left out keep their stored value; null clears a field.",
        "properties": {
            "displayName": {
                "type": ["string", "null"],
                "maxLength": audience.DISPLAY_NAME_MAX_LENGTH,
                "pattern": audience.TEXT_PATTERN,
                "description": "Name shown in the console; no control characters.",
            },
            "phone": {
                "type": ["string", "null"],
                "pattern": audience.PHONE_PATTERN,
                "description": "E.164 number for SMS fallback, e.g. +48600100200.",
                "x-error": "Use an E.164 phone number such as +48600100200.",
            },
            "locale": ref("Locale"),
            "timeZone": ref("TimeZone"),
            "optedOut": {"type": "boolean", "description": "true stops all pushes to this subscriber."},
            "attributes": {
                "type": "object",
                "maxProperties": audience.ATTRIBUTE_MAX_COUNT,
                "propertyNames": {"type": "string", "pattern": audience.ATTRIBUTE_NAME_PATTERN},
                "additionalProperties": {
                    "type": ["string", "number", "boolean", "null"],
                    "maxLength": audience.ATTRIBUTE_VALUE_MAX_LENGTH,
                },
                "description": "Merged into the stored attributes; a null value removes that name. Names start "
                "with a letter (letters, digits, _ . -, at most 64); values are scalars.",
            },
        },
    },
    "Subscriber": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "key",
            "displayName",
            "phone",
            "locale",
            "timeZone",
            "optedOut",
            "attributes",
            "createdAt",
            "updatedAt",
        ],
        "properties": {
            "key": {"type": "string"},
            "displayName": _NULLABLE_STRING,
            "phone": _NULLABLE_STRING,
            "locale": _NULLABLE_STRING,
            "timeZone": _NULLABLE_STRING,
            "optedOut": {"type": "boolean"},
            "attributes": {"type": "object"},
            "createdAt": {"type": "string", "format": "date-time"},
            "updatedAt": {"type": "string", "format": "date-time"},
        },
    },
}

PATHS = {
    "/subscribers/{key}": {
        "put": openapi.operation(
            "upsertSubscriber",
            "Create or update a subscriber",
            description="Creates the subscriber (201) or updates it (200).",
            tag="subscribers",
            parameters=[openapi.path_parameter("key", ref("SubscriberKey"), "The subscriber key (URL-encoded).")],
            body=ref("SubscriberUpdate"),
            body_limit=BODY_LIMIT,
            ok={
                200: ("The subscriber was updated.", ref("Subscriber")),
                201: ("The subscriber was created.", ref("Subscriber")),
            },
        )
    }
}
openapi.register(PATHS, SCHEMAS)

_FIELDS = (
    ("displayName", "display_name"),
    ("phone", "phone"),
    ("locale", "locale"),
    ("timeZone", "time_zone"),
    ("optedOut", "opted_out"),
    ("attributes", "attributes"),
)


def subscriber_json(subscriber: Subscriber) -> dict[str, Any]:
    """A subscriber as the API shows it."""
    return {
        "key": subscriber.subscriber_key,
        "displayName": subscriber.display_name,
        "phone": subscriber.phone,
        "locale": subscriber.locale,
        "timeZone": subscriber.time_zone,
        "optedOut": subscriber.opted_out,
        "attributes": subscriber.attributes or {},
        "createdAt": subscriber.created_at.isoformat(),
        "updatedAt": subscriber.updated_at.isoformat(),
    }


@bp.put("/subscribers/<path:key>")
@api_key
def upsert_subscriber(key: str) -> Any:
    """Create or update the subscriber with this key."""
    checker.check(ref("SubscriberKey"), key, "key")
    body = read_json(BODY_LIMIT)
    checker.check(SCHEMAS["SubscriberUpdate"], body, None)
    data = audience.SubscriberData(**{attr: body[name] for name, attr in _FIELDS if name in body})
    subscriber, created = audience.upsert_subscriber(key, data)
    return jsonify(subscriber_json(subscriber)), 201 if created else 200
