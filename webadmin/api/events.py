"""POST /api/v1/events: apps (and the Simulator) report pushes received and opened."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import jsonify

from webadmin.access import api_key
from webadmin.api import bp, openapi
from webadmin.api.auth import current_api_app
from webadmin.api.messaging import _DATETIME_PATTERN
from webadmin.api.openapi import checker, ref
from webadmin.api.validation import KIB, ApiError, read_json
from webadmin.services.events import EVENT_TYPES, DeviceEvent, record_events

BODY_LIMIT = 256 * KIB
MAX_EVENTS = 1000
_UUID = {"type": "string", "pattern": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "EventBatch": {
        "type": "object",
        "additionalProperties": False,
        "required": ["events"],
        "properties": {"events": {"type": "array", "minItems": 1, "maxItems": MAX_EVENTS, "items": ref("Event")}},
    },
    "Event": {
        "type": "object",
        "additionalProperties": False,
        "required": ["message", "type"],
        "properties": {
            "message": {**_UUID, "description": "The message UUID the push carried (data field `messageId`)."},
            "type": {"type": "string", "enum": list(EVENT_TYPES)},
            "at": {
                "type": "string",
                "format": "date-time",
                "pattern": _DATETIME_PATTERN,
                "description": "When it happened on the device (default: when received here).",
            },
        },
    },
    "EventReport": {
        "type": "object",
        "additionalProperties": False,
        "required": ["counted", "duplicates", "unknownMessages"],
        "properties": {
            "counted": {"type": "integer", "minimum": 0},
            "duplicates": {"type": "integer", "minimum": 0, "description": "Already reported; counted once."},
            "unknownMessages": {
                "type": "array",
                "items": {"type": "string"},
                "description": "UUIDs this app sent no message with; the rest of the batch counts.",
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
                "Unknown messages are listed, not fatal for the batch.",
            )
        }
    },
    SCHEMAS,
)


def _event(raw: dict[str, Any], index: int) -> DeviceEvent:
    """One validated event."""
    at = None
    if "at" in raw:
        try:
            at = datetime.fromisoformat(raw["at"])
        except ValueError as exc:
            raise ApiError(422, "`at` is not a valid date-time.", field=f"events[{index}].at") from exc
    return DeviceEvent(raw["message"].lower(), raw["type"], at)


@bp.post("/events")
@api_key
def report_events() -> Any:
    """Record a batch of device events for the key's app."""
    body = read_json(BODY_LIMIT)
    checker.check(SCHEMAS["EventBatch"], body, None)
    events = [_event(raw, i) for i, raw in enumerate(body["events"])]
    report = record_events(events, app_id=current_api_app().id)
    return jsonify({"counted": report.counted, "duplicates": report.duplicates, "unknownMessages": report.unknown})
