"""POST /api/v1/events: apps (and the Simulator) report pushes received and opened."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NoReturn

from flask import jsonify

from webadmin.access import api_key
from webadmin.api import bp, openapi
from webadmin.api.auth import current_api_app
from webadmin.api.devices import TOKEN
from webadmin.api.messaging import _DATETIME_PATTERN
from webadmin.api.openapi import ref
from webadmin.api.validation import KIB, ApiError, read_json
from webadmin.services.events import EVENT_TYPES, DeviceEvent, record_events

BODY_LIMIT = 256 * KIB
MAX_EVENTS = 1000
_UUID = {"type": "string", "pattern": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"}

_TYPE = {"type": "string", "enum": list(EVENT_TYPES)}
_AT = {
    "type": "string",
    "format": "date-time",
    "pattern": _DATETIME_PATTERN,
    "description": "When it happened on the device (default: when received here).",
}
_CAMPAIGN = {**_UUID, "description": "The campaign UUID the push carried (data field `campaignId`, bulk routes)."}
_DEVICE = {**TOKEN, "description": "This install's push token, as registered with PUT /devices/{token}."}

SCHEMAS: dict[str, dict[str, Any]] = {
    "EventBatch": {
        "type": "object",
        "additionalProperties": False,
        "required": ["events"],
        "properties": {"events": {"type": "array", "minItems": 1, "maxItems": MAX_EVENTS, "items": ref("Event")}},
    },
    "Event": {
        "description": "One report, naming its message in exactly one of two ways: by `message` (the push's "
        "`messageId`), or by `campaign` + `device` (the push's `campaignId` and this install's token) where the "
        "push carried no `messageId` (OneSignal and Marketing Cloud routes). Both or neither: 422.",
        "oneOf": [ref("MessageEvent"), ref("CampaignEvent")],
    },
    "MessageEvent": {
        "type": "object",
        "additionalProperties": False,
        "required": ["message", "type"],
        "properties": {
            "message": {**_UUID, "description": "The message UUID the push carried (data field `messageId`)."},
            "type": _TYPE,
            "at": _AT,
        },
    },
    "CampaignEvent": {
        "type": "object",
        "additionalProperties": False,
        "required": ["campaign", "device", "type"],
        "properties": {"campaign": _CAMPAIGN, "device": _DEVICE, "type": _TYPE, "at": _AT},
    },
    "UnknownCampaignDevice": {
        "type": "object",
        "additionalProperties": False,
        "required": ["campaign", "device"],
        "properties": {"campaign": {"type": "string"}, "device": {"type": "string"}},
    },
    "EventReport": {
        "type": "object",
        "additionalProperties": False,
        "required": ["counted", "duplicates", "unknownMessages", "unknownCampaignDevices"],
        "properties": {
            "counted": {"type": "integer", "minimum": 0},
            "duplicates": {"type": "integer", "minimum": 0, "description": "Already reported; counted once."},
            "unknownMessages": {
                "type": "array",
                "items": {"type": "string"},
                "description": "UUIDs this app sent no message with; the rest of the batch counts.",
            },
            "unknownCampaignDevices": {
                "type": "array",
                "items": ref("UnknownCampaignDevice"),
                "description": "`campaign` + `device` pairs with no message: an unknown campaign, a campaign of "
                "another app, a token not registered for this app, or a device the campaign did not target. The "
                "rest of the batch counts.",
            },
        },
    },
}
openapi.register(
    {
        "/events": {
            "post": openapi.operation(
                "reportEvents",
                "Report pushes received and opened",
                tag="events",
                body=ref("EventBatch"),
                body_limit=BODY_LIMIT,
                ok={200: ("What was counted.", ref("EventReport"))},
                description="Idempotent: an open counts once per message however often it is reported. "
                "Unknown messages (or campaign + device pairs) are listed, not fatal for the batch.",
            )
        }
    },
    SCHEMAS,
)


# --- validation --------------------------------------------------------------------------------------------
# By hand, to exactly the schemas above (tests/api/test_events.py compares the two on generated bodies, and
# schemathesis checks the served document): this runs on every event of every request, and the generic checker
# cost more than recording a one-event batch.

_UUID_RE = re.compile(_UUID["pattern"])
_AT_RE = re.compile(_DATETIME_PATTERN, re.ASCII)  # JSON Schema's \d is ASCII
_TOKEN_RE = re.compile(TOKEN["pattern"])
_FIELDS = frozenset(SCHEMAS["CampaignEvent"]["properties"]) | {"message"}
_KINDS = frozenset(EVENT_TYPES)


def _refuse(message: str, field: str | None) -> NoReturn:
    raise ApiError(422, message, field=field)


def _uuid(value: Any, field: str) -> str:
    """A UUID string, lower-cased (as stored)."""
    if type(value) is not str:
        _refuse(f"{field} must be a string.", field)
    if _UUID_RE.fullmatch(value) is None:
        _refuse(f"{field} has a form that is not allowed.", field)
    return value.lower()


def _token(value: Any, field: str) -> str:
    """A push token as the devices API accepts it."""
    if type(value) is not str:
        _refuse(f"{field} must be a string.", field)
    if not value:
        _refuse(f"{field} must have at least 1 characters.", field)
    if len(value) > TOKEN["maxLength"]:
        _refuse(f"{field} must have at most {TOKEN['maxLength']} characters.", field)
    if _TOKEN_RE.fullmatch(value) is None:
        _refuse(f"{field} has a form that is not allowed.", field)
    return value


def _at(value: Any, field: str) -> datetime:
    """An RFC 3339 date-time with its offset."""
    if type(value) is not str:
        _refuse(f"{field} must be a string.", field)
    if _AT_RE.fullmatch(value) is None:
        _refuse(f"{field} has a form that is not allowed.", field)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        _refuse("`at` is not a valid date-time.", field)


def _target(raw: dict[str, Any], where: str) -> tuple[str | None, str | None, str | None]:
    """(message UUID, campaign UUID, device token): exactly one of the two ways of naming the message."""
    if "message" in raw:
        if "campaign" in raw or "device" in raw:
            other = "campaign" if "campaign" in raw else "device"
            _refuse(f"{where} names its message by `message` or by `campaign` + `device`, not both.",
                    f"{where}.{other}")
        return _uuid(raw["message"], f"{where}.message"), None, None
    if "campaign" not in raw and "device" not in raw:
        _refuse(f"{where} needs `message` (the push's messageId), or `campaign` (its campaignId) and `device` "
                "(this install's token).", f"{where}.message")
    if "device" not in raw:
        _refuse(f"{where}.device is required with campaign.", f"{where}.device")
    if "campaign" not in raw:
        _refuse(f"{where}.campaign is required with device.", f"{where}.campaign")
    return None, _uuid(raw["campaign"], f"{where}.campaign"), _token(raw["device"], f"{where}.device")


def _event(raw: Any, index: int) -> DeviceEvent:
    """One validated event."""
    where = f"events[{index}]"
    if type(raw) is not dict:
        _refuse(f"{where} must be an object.", where)
    if not _FIELDS.issuperset(raw):
        name = next(name for name in raw if name not in _FIELDS)
        _refuse(f"{where}.{name} is not a known field.", f"{where}.{name}")
    if "type" not in raw:
        _refuse(f"{where}.type is required.", f"{where}.type")
    kind = raw["type"]
    if type(kind) is not str:
        _refuse(f"{where}.type must be a string.", f"{where}.type")
    if kind not in _KINDS:
        _refuse(f"{where}.type is not one of the allowed values.", f"{where}.type")
    message, campaign, device = _target(raw, where)
    at = _at(raw["at"], f"{where}.at") if "at" in raw else None
    return DeviceEvent(message, kind, at, campaign, device)


def parse_batch(body: Any) -> list[DeviceEvent]:
    """The events of a request body (an EventBatch), or a 422 naming the first field that is wrong."""
    if type(body) is not dict:
        _refuse("The body must be an object.", None)
    if "events" not in body:
        _refuse("events is required.", "events")
    if len(body) > 1:
        name = next(name for name in body if name != "events")
        _refuse(f"{name} is not a known field.", name)
    events = body["events"]
    if type(events) is not list:
        _refuse("events must be an array.", "events")
    if not events:
        _refuse("events must have at least 1 items.", "events")
    if len(events) > MAX_EVENTS:
        _refuse(f"events must have at most {MAX_EVENTS} items.", "events")
    return [_event(raw, index) for index, raw in enumerate(events)]


@bp.post("/events")
@api_key
def report_events() -> Any:
    """Record a batch of device events for the key's app."""
    events = parse_batch(read_json(BODY_LIMIT))
    report = record_events(events, app_id=current_api_app().id)
    return jsonify({
        "counted": report.counted,
        "duplicates": report.duplicates,
        "unknownMessages": report.unknown,
        "unknownCampaignDevices": [{"campaign": c, "device": d} for c, d in report.unknown_devices],
    })
