"""PUT and DELETE /api/v1/devices/{token}: apps register, refresh and unsubscribe push tokens."""

from __future__ import annotations

from typing import Any

from flask import jsonify

from webadmin.access import api_key
from webadmin.api import bp, openapi
from webadmin.api.auth import current_api_app
from webadmin.api.openapi import checker, ref
from webadmin.api.validation import KIB, ApiError, read_json
from webadmin.models.app import PLATFORMS
from webadmin.models.audience import DEVICE_STATUSES
from webadmin.services import audience

BODY_LIMIT = 64 * KIB
_NULLABLE_STRING = {"type": ["string", "null"]}

TOKEN = {
    "type": "string",
    "minLength": 1,
    "maxLength": audience.TOKEN_MAX_LENGTH,
    "pattern": audience.TOKEN_PATTERN,
    "description": "The provider's push token (FCM registration token, APNs device token, web push id).",
    "x-error": "A device token is 1–1024 characters of A–Z, a–z, 0–9 and _ : . ~ - (not starting with a dot).",
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "DeviceRegistration": {
        "type": "object",
        "additionalProperties": False,
        "description": "Fields left out keep their stored value; null clears a field.",
        "properties": {
            "platform": {
                "type": "string",
                "enum": list(PLATFORMS),
                "description": "Required when the token is new (422 otherwise) and must be one the app ships on; "
                "a token keeps its platform (409 when it differs).",
            },
            "subscriberKey": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": audience.KEY_MAX_LENGTH,
                "pattern": audience.KEY_PATTERN,
                "description": "The signed-in customer (see SubscriberKey); an unknown key creates the subscriber, "
                "null detaches the device. A token belongs to one subscriber at a time.",
                "x-error": "A subscriber key is 1–254 characters, not only blanks, without control characters.",
            },
            "locale": ref("Locale"),
            "timeZone": ref("TimeZone"),
            "appVersion": {
                "type": ["string", "null"],
                "maxLength": audience.APP_VERSION_MAX_LENGTH,
                "pattern": audience.TEXT_PATTERN,
                "description": "The app's version, e.g. 4.2.1.",
            },
        },
    },
    "Device": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "token",
            "platform",
            "status",
            "subscriberKey",
            "locale",
            "timeZone",
            "appVersion",
            "invalidReason",
            "invalidatedAt",
            "registeredAt",
            "createdAt",
        ],
        "properties": {
            "token": {"type": "string"},
            "platform": {"type": "string", "enum": list(PLATFORMS)},
            "status": {"type": "string", "enum": list(DEVICE_STATUSES)},
            "subscriberKey": _NULLABLE_STRING,
            "locale": _NULLABLE_STRING,
            "timeZone": _NULLABLE_STRING,
            "appVersion": _NULLABLE_STRING,
            "invalidReason": {**_NULLABLE_STRING, "description": "Why the provider refused the token."},
            "invalidatedAt": {**_NULLABLE_STRING, "format": "date-time"},
            "registeredAt": {"type": "string", "format": "date-time", "description": "Last (re-)registration."},
            "createdAt": {"type": "string", "format": "date-time"},
        },
    },
}
_TOKEN_PARAMETER = [openapi.path_parameter("token", TOKEN, "The device's push token.")]
PATHS = {
    "/devices/{token}": {
        "put": openapi.operation(
            "registerDevice",
            "Register or refresh a device",
            description="Idempotent. Creates the device (201) or updates it (200). Re-registering an invalid or "
            "unsubscribed token makes it active again. Concurrent calls for one token leave one device.",
            tag="devices",
            parameters=_TOKEN_PARAMETER,
            body=ref("DeviceRegistration"),
            body_limit=BODY_LIMIT,
            ok={200: ("The device was updated.", ref("Device")), 201: ("The device was created.", ref("Device"))},
            errors=(409,),
        ),
        "delete": openapi.operation(
            "unsubscribeDevice",
            "Unsubscribe a device",
            description="Marks the device `unsubscribed`; registering it again re-activates it.",
            tag="devices",
            parameters=_TOKEN_PARAMETER,
            ok={200: ("The device, now unsubscribed.", ref("Device"))},
            errors=(403, 404, 422),
        ),
    }
}
openapi.register(PATHS, SCHEMAS)

_OPTIONAL_FIELDS = (
    ("subscriberKey", "subscriber_key"),
    ("locale", "locale"),
    ("timeZone", "time_zone"),
    ("appVersion", "app_version"),
)


def _registration(body: dict[str, Any]) -> audience.DeviceRegistration:
    """The validated body as a registration (absent fields stay UNSET)."""
    sent = {attr: body[name] for name, attr in _OPTIONAL_FIELDS if name in body}
    return audience.DeviceRegistration(platform=body.get("platform"), **sent)


@bp.put("/devices/<token>")
@api_key
def register_device(token: str) -> Any:
    """Register or refresh a device token for the key's app."""
    checker.check(TOKEN, token, "token")
    body = read_json(BODY_LIMIT)
    checker.check(SCHEMAS["DeviceRegistration"], body, None)
    device, created = audience.register_device(current_api_app(), token, _registration(body))
    return jsonify(device), 201 if created else 200


@bp.delete("/devices/<token>")
@api_key
def unsubscribe_device(token: str) -> Any:
    """Unsubscribe a device of the key's app."""
    checker.check(TOKEN, token, "token")
    device = audience.unsubscribe_device(current_api_app(), token)
    if device is None:
        raise ApiError(404, "This app has no device with this token.", field="token")
    return jsonify(device)
