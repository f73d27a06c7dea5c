"""POST and DELETE /api/v1/groups/{id}/members: bulk membership changes by subscriber key."""

from __future__ import annotations

from typing import Any

from flask import jsonify

from webadmin.access import api_key
from webadmin.api import bp, openapi
from webadmin.api.auth import current_api_actor
from webadmin.api.openapi import checker, ref
from webadmin.api.validation import MIB, ApiError, read_json
from webadmin.models.audience import Group
from webadmin.services import audience

BODY_LIMIT = 1 * MIB
MAX_KEYS = 10_000

GROUP_ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
# Any integer reaches the view, which answers the documented 422 naming `id` for one out of GROUP_ID's range
# (the console's bounded `<int>` would make it a bare 404 before the API's own checks).
GROUP_MEMBERS = "/groups/<int(max=None):group_id>/members"
_COUNT = {"type": "integer", "minimum": 0}

SCHEMAS: dict[str, dict[str, Any]] = {
    "SubscriberKeys": {
        "type": "object",
        "additionalProperties": False,
        "required": ["subscriberKeys"],
        "properties": {
            "subscriberKeys": {
                "type": "array",
                "maxItems": MAX_KEYS,
                "items": ref("SubscriberKey"),
                "description": "Keys are compared stripped and lowercased; duplicates count once.",
            }
        },
    },
    "MembersAdded": {
        "type": "object",
        "additionalProperties": False,
        "required": ["added", "alreadyMember", "unknownKeys"],
        "properties": {
            "added": {**_COUNT, "description": "Subscribers that became members."},
            "alreadyMember": {**_COUNT, "description": "Subscribers that were members already."},
            "unknownKeys": {"type": "array", "items": {"type": "string"}, "description": "Keys of no subscriber."},
        },
    },
    "MembersRemoved": {
        "type": "object",
        "additionalProperties": False,
        "required": ["removed", "notMember", "unknownKeys"],
        "properties": {
            "removed": {**_COUNT, "description": "Subscribers that stopped being members."},
            "notMember": {**_COUNT, "description": "Subscribers that were not members."},
            "unknownKeys": {"type": "array", "items": {"type": "string"}, "description": "Keys of no subscriber."},
        },
    },
}

_GROUP_PARAMETER = [openapi.path_parameter("id", GROUP_ID, "The group's id (shown in the console).")]
PATHS = {
    "/groups/{id}/members": {
        "post": openapi.operation(
            "addGroupMembers",
            "Add subscribers to a group",
            description="Adds existing subscribers by key; unknown keys are reported, not created.",
            tag="groups",
            parameters=_GROUP_PARAMETER,
            body=ref("SubscriberKeys"),
            body_limit=BODY_LIMIT,
            ok={200: ("What changed.", ref("MembersAdded"))},
            errors=(404,),
        ),
        "delete": openapi.operation(
            "removeGroupMembers",
            "Remove subscribers from a group",
            description="Removes subscribers by key; unknown keys are reported.",
            tag="groups",
            parameters=_GROUP_PARAMETER,
            body=ref("SubscriberKeys"),
            body_limit=BODY_LIMIT,
            ok={200: ("What changed.", ref("MembersRemoved"))},
            errors=(404,),
        ),
    }
}
openapi.register(PATHS, SCHEMAS)


def _group_and_keys(group_id: int) -> tuple[Group, list[str]]:
    """The validated group id and body: the group (404 when unknown) and the keys."""
    checker.check(GROUP_ID, group_id, "id")
    body = read_json(BODY_LIMIT)
    checker.check(SCHEMAS["SubscriberKeys"], body, None)
    group = audience.find_group(group_id)
    if group is None:
        raise ApiError(404, "There is no group with this id.", field="id")
    return group, body["subscriberKeys"]


@bp.post(GROUP_MEMBERS)
@api_key
def add_group_members(group_id: int) -> Any:
    """Add subscribers to a group by key."""
    group, keys = _group_and_keys(group_id)
    report = audience.add_group_members(group, keys, actor=current_api_actor())
    return jsonify({"added": report.changed, "alreadyMember": report.unchanged, "unknownKeys": report.unknown})


@bp.delete(GROUP_MEMBERS)
@api_key
def remove_group_members(group_id: int) -> Any:
    """Remove subscribers from a group by key."""
    group, keys = _group_and_keys(group_id)
    report = audience.remove_group_members(group, keys, actor=current_api_actor())
    return jsonify({"removed": report.changed, "notMember": report.unchanged, "unknownKeys": report.unknown})
