"""POST /api/v1/push (the seed's pushNotification), /share (social sharing) and /templates/{slug}/send."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from flask import jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from webadmin.access import api_key
from webadmin.api import bp, openapi
from webadmin.api.auth import current_api_actor, current_api_app
from webadmin.api.openapi import checker, ref
from webadmin.api.validation import KIB, MIB, ApiError, read_json
from webadmin.extensions import db
from webadmin.models.campaign import Campaign
from webadmin.services import ServiceError, campaigns, sms_fallback
from webadmin.services.campaigns import MAX_TEXT, CampaignDraft
from webadmin.services.sharing import RateLimited, share
from webadmin.services.sms_fallback import MAX_PARTS, MAX_TEXT_CHARS, MAX_WINDOW_SECONDS, MIN_WINDOW_SECONDS

BODY_LIMIT = 4 * MIB  # up to 100k subscriber keys
SMALL_BODY = 64 * KIB
_DATETIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$"
_TEXT = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_TEXT,
    "pattern": r"^[^\x00]*\S[^\x00]*$",
    "x-error": f"1–{MAX_TEXT} characters, not only blanks.",
}
_NULLABLE = {"type": ["string", "null"]}

SCHEMAS: dict[str, dict[str, Any]] = {
    "PushRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["messageText"],
        "properties": {
            "messageText": _TEXT,
            "title": {"type": "string", "maxLength": 200, "pattern": r"^[^\x00]*$"},
            "openDirect": {
                "type": "string",
                "maxLength": 2048,
                "pattern": r"^\S+$",
                "description": "The app's own scheme (e.g. nibs://offers/7) or https; others are 422.",
            },
            "imageUrl": {"type": "string", "maxLength": 2048, "pattern": r"^https://\S+$"},
            "subscriberKeys": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100_000,
                "items": ref("SubscriberKey"),
                "description": "Omit to push to all users.",
            },
            "data": {
                "type": "object",
                "maxProperties": campaigns.MAX_DATA_KEYS,
                "propertyNames": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 64,
                    "pattern": r"^[A-Za-z_][A-Za-z0-9_.-]*$",
                },
                "additionalProperties": {
                    "type": "string",
                    "maxLength": campaigns.MAX_DATA_VALUE,
                    "pattern": r"^[^\x00]*$",
                },
                "description": f"String pairs, at most {campaigns.MAX_DATA_BYTES} bytes together. Keys FCM "
                "reserves (from, notification, message_type, collapse_key, google…, gcm…) and the providers' own "
                "(aps, openDirect, imageUrl) are 422.",
            },
            "ttl": {"type": "integer", "minimum": 0, "maximum": campaigns.MAX_TTL},
            "scheduledAt": {
                "type": "string",
                "format": "date-time",
                "pattern": _DATETIME_PATTERN,
                "description": "RFC 3339 with an offset, in the future; omit to send now.",
            },
            "smsFallback": {
                "type": "object",
                "additionalProperties": False,
                "required": ["afterSeconds"],
                "properties": {
                    "afterSeconds": {
                        "type": "integer",
                        "minimum": MIN_WINDOW_SECONDS,
                        "maximum": MAX_WINDOW_SECONDS,
                        "description": "How long after the push a subscriber has to open it before the SMS.",
                    },
                    "text": {
                        "type": "string",
                        "maxLength": MAX_TEXT_CHARS,
                        "pattern": r"^[^\x00]*$",
                        "description": "Omitted or blank: the push text, plus its link when that is https. "
                        f"At most {MAX_PARTS} SMS parts (422 otherwise).",
                    },
                },
                "description": "Send an SMS to the subscribers who opened none of this push's messages in time, "
                "as the compose page's “If not opened in time, send an SMS” does. Needs an SMS channel "
                "(Settings → SMS; 422 without one).",
            },
        },
    },
    "Campaign": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "uuid", "status", "source", "targeted", "sent", "failed", "opened", "scheduledAt",
                     "smsFallback"],
        "properties": {
            "id": {"type": "integer"},
            "uuid": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in campaigns.S]},
            "source": {"type": "string"},
            "targeted": {"type": "integer"},
            "sent": {"type": "integer"},
            "failed": {"type": "integer"},
            "opened": {"type": "integer"},
            "scheduledAt": {**_NULLABLE, "format": "date-time"},
            "smsFallback": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "required": ["afterSeconds", "text"],
                "properties": {"afterSeconds": {"type": "integer"}, "text": {"type": "string"}},
                "description": "The SMS fallback (null: none), with the text it sends: the given one, or the "
                "push text and its https link when none was given.",
            },
        },
    },
    "ShareRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["sharerKey", "sharerName", "itemId"],
        "properties": {
            "sharerKey": ref("SubscriberKey"),
            "sharerName": {
                "type": "string",
                "minLength": 1,
                "maxLength": 100,
                "pattern": r"^[^\x00-\x1f]*\S[^\x00-\x1f]*$",
            },
            "itemId": {
                "type": "integer",
                "minimum": 1,
                "maximum": 2**31 - 1,
                "description": "The shared offer or product.",
            },
        },
    },
    "TemplateSendRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["recipient"],
        "properties": {
            "recipient": ref("SubscriberKey"),
            "contextData": {"type": "object", "maxProperties": 100},
            "tag": {"type": "string", "maxLength": 64, "pattern": r"^[A-Za-z0-9_.:-]*$"},
        },
    },
    "TemplateSent": {
        "type": "object",
        "additionalProperties": False,
        "required": ["sent", "messages"],
        "properties": {
            "sent": {"type": "boolean"},
            "messages": {"type": "array", "items": {"type": "string", "description": "message UUIDs"}},
        },
    },
}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"^[\x21-\x7e]+$"},
    "description": "The same key returns the same campaign; the same key with a different body is 409.",
}
_SLUG = {"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"^[a-z0-9][a-z0-9_-]*$"}
PATHS = {
    "/push": {
        "post": openapi.operation(
            "push",
            "Push a message (the seed's pushNotification)",
            tag="messaging",
            body=ref("PushRequest"),
            body_limit=BODY_LIMIT,
            parameters=[_IDEMPOTENCY],
            description="To the given subscriber keys, or to all users. Queued at once (202) or scheduled.",
            ok={202: ("The campaign (new, or the one this Idempotency-Key made before).", ref("Campaign"))},
            errors=(409,),
        )
    },
    "/share": {
        "post": openapi.operation(
            "share",
            "A consumer shared an offer or product",
            tag="messaging",
            body=ref("ShareRequest"),
            body_limit=SMALL_BODY,
            description="Pushes “<sharerName> shared <item>” with the item's deep link to the "
            "audience configured in Settings → Sharing (all users, or one group). `sharerKey` must be a subscriber "
            "with a device in this app (404 otherwise, as for an unknown item). At most `share.max_per_hour` per "
            "sharer and `share.max_per_app_per_hour` per app in any hour (429 with Retry-After); 409 when the "
            "configured group no longer exists.",
            ok={202: ("The campaign.", ref("Campaign"))},
            errors=(404, 409, 429),
        )
    },
    "/templates/{slug}/send": {
        "post": openapi.operation(
            "sendTemplate",
            "Send a template to a subscriber (pymess send_template)",
            tag="messaging",
            parameters=[openapi.path_parameter("slug", _SLUG, "The template's slug.")],
            body=ref("TemplateSendRequest"),
            body_limit=SMALL_BODY,
            ok={200: ("Sent (or `sent: false` when the template may not be sent).", ref("TemplateSent"))},
            errors=(404,),
        )
    },
}
openapi.register(PATHS, SCHEMAS)


def campaign_json(campaign: Campaign) -> dict[str, Any]:
    """The API's view of a campaign."""
    return {
        "id": campaign.id,
        "uuid": campaign.uuid,
        "status": campaign.status,
        "source": campaign.source,
        "targeted": campaign.targeted,
        "sent": campaign.sent,
        "failed": campaign.failed,
        "opened": campaign.opened,
        "scheduledAt": campaign.scheduled_at.isoformat() if campaign.scheduled_at else None,
        "smsFallback": None if campaign.sms_fallback_seconds is None else {
            "afterSeconds": campaign.sms_fallback_seconds, "text": campaign.sms_fallback_text or campaign.text},
    }


def _when(value: str | None) -> datetime | None:
    """scheduledAt as an aware datetime."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise ApiError(422, "scheduledAt is not a valid date-time.", field="scheduledAt") from exc


def _idempotency() -> tuple[str | None, str]:
    """The scoped Idempotency-Key and the body's hash."""
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        checker.check(_IDEMPOTENCY["schema"], key, "Idempotency-Key")
        key = f"api:{current_api_app().id}:{key}"
    return key, ""


def _existing(key: str, body_hash: str) -> Campaign | None:
    """The campaign an earlier call with this key made; 409 when the body differs."""
    campaign = db.session.scalar(select(Campaign).where(Campaign.idempotency_key == key))
    if campaign is not None and campaign.request_hash != body_hash:
        raise ApiError(409, "This Idempotency-Key was used with a different body.", field="Idempotency-Key")
    return campaign


def _push_draft(body: dict[str, Any], key: str | None, body_hash: str) -> CampaignDraft:
    """The campaign draft of a push request."""
    keys = body.get("subscriberKeys")
    fallback = body.get("smsFallback") or {}
    return CampaignDraft(
        app_id=current_api_app().id,
        text=body["messageText"],
        title=body.get("title"),
        open_direct=body.get("openDirect"),
        image_url=body.get("imageUrl"),
        data=body.get("data") or {},
        ttl=body.get("ttl"),
        audience={"type": "keys", "keys": keys} if keys else {"type": "all"},
        source="api",
        scheduled_at=_when(body.get("scheduledAt")),
        idempotency_key=key,
        request_hash=body_hash,
        sms_fallback_seconds=fallback.get("afterSeconds"),
        sms_fallback_text=fallback.get("text"),
    )


# The SMS fallback's checks name the compose page's fields; the API names its own.
_FALLBACK_FIELDS = {"sms_after": "smsFallback.afterSeconds", "sms_text": "smsFallback.text",
                    "sms_fallback": "smsFallback"}


def _with_sms_fallback(draft: CampaignDraft) -> CampaignDraft:
    """The draft with its fallback checked and its default text filled in (a 422 naming the body's field)."""
    try:
        sms_fallback.apply_to_draft(draft)
    except ServiceError as exc:
        raise ApiError(422, exc.message, field=_FALLBACK_FIELDS.get(exc.field or "", "smsFallback")) from exc
    return draft


@bp.post("/push")
@api_key
def push() -> Any:
    """Push now or later; the same Idempotency-Key returns the same campaign."""
    body = read_json(BODY_LIMIT)
    checker.check(SCHEMAS["PushRequest"], body, None)
    key, _ = _idempotency()
    body_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    if key and (existing := _existing(key, body_hash)) is not None:
        return jsonify(campaign_json(existing)), 202
    try:
        campaign = campaigns.create_campaign(_with_sms_fallback(_push_draft(body, key, body_hash)),
                                             actor=current_api_actor())
        db.session.commit()
    except IntegrityError:  # the same key raced in from another request: answer with its campaign
        db.session.rollback()
        return jsonify(campaign_json(_existing(key, body_hash))), 202
    if campaign.scheduled_at is not None:
        campaigns.schedule(campaign, campaign.scheduled_at, actor=current_api_actor())
    else:
        campaigns.start(campaign, actor=current_api_actor())
    db.session.refresh(campaign)
    return jsonify(campaign_json(campaign)), 202


@bp.post("/share")
@api_key
def share_item() -> Any:
    """Social sharing push, rate-limited per sharer."""
    body = read_json(SMALL_BODY)
    checker.check(SCHEMAS["ShareRequest"], body, None)
    try:
        campaign = share(
            current_api_app(), body["sharerKey"], body["sharerName"], body["itemId"], actor=current_api_actor()
        )
    except RateLimited as exc:
        db.session.rollback()
        raise ApiError(429, exc.message, code="rate_limited", headers={"Retry-After": str(exc.retry_after)}) from exc
    db.session.refresh(campaign)
    return jsonify(campaign_json(campaign)), 202


@bp.post("/templates/<slug>/send")
@api_key
def send_template(slug: str) -> Any:
    """pymess send_template over HTTP."""
    from webadmin.sending.pymess import send_template as send

    checker.check(_SLUG, slug, "slug")
    body = read_json(SMALL_BODY)
    checker.check(SCHEMAS["TemplateSendRequest"], body, None)
    try:
        messages = send(
            body["recipient"],
            slug,
            body.get("contextData") or {},
            tag=body.get("tag") or None,
            app_id=current_api_app().id,
        )
    except ServiceError as exc:
        db.session.rollback()
        status = 404 if exc.code == "not_found" else 422
        raise ApiError(status, exc.message, field="contextData" if exc.field == "body" else exc.field) from exc
    uuids = [m.uuid for m in messages or []]
    return jsonify({"sent": messages is not None, "messages": uuids})
