"""What the compose page needs: choices, prefills (offer, duplicate), idempotent drafts, counts, tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Group
from webadmin.models.campaign import Campaign
from webadmin.models.message import Template
from webadmin.models.offer import Offer
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.sending.audience import AudienceSpec, count_audience
from webadmin.services import ServiceError, audit, campaigns, settings, sms_fallback
from webadmin.services.audience import match_keys
from webadmin.services.campaigns import CampaignDraft

OFFER_TITLE = "Exclusive Offer: {name}"
MAX_TEST_KEYS = 20


@dataclass
class Choices:
    """Options of the compose form's selects."""

    apps: list[App]
    templates: list[Template]
    offers: list[Offer]
    groups: list[Group]


def choices() -> Choices:
    """Apps, active templates, current offers and groups."""
    now = utcnow()
    offers = [o for o in db.session.scalars(select(Offer).where(Offer.archived.is_(False)).order_by(Offer.name))
              if o.is_current(now)]
    return Choices(
        apps=list(db.session.scalars(select(App).order_by(App.name))),
        templates=list(db.session.scalars(select(Template).where(Template.is_active.is_(True)).order_by(Template.slug))),
        offers=offers,
        groups=list(db.session.scalars(select(Group).order_by(Group.name))),
    )


def offer_prefill(offer_id: int) -> dict[str, Any]:
    """The Push Offer action: "Exclusive Offer: <name>" with the offer's deep link; expired offers refused."""
    offer = db.session.get(Offer, offer_id)
    if offer is None:
        raise ServiceError("No such offer.", code="not_found")
    if not offer.is_current():
        raise ServiceError(f"“{offer.name}” is not current (expired, not yet valid or archived) and cannot be pushed.")
    return {"app_id": offer.app_id, "text": OFFER_TITLE.format(name=offer.name), "offer_id": offer.id,
            "open_direct": offer.deep_link, "image_url": offer.image_url}


def campaign_prefill(campaign_id: int) -> dict[str, Any]:
    """Duplicate as new: the campaign's content and audience."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise ServiceError("No such campaign.", code="not_found")
    audience = campaign.audience or {}
    return {
        "app_id": campaign.app_id, "text": campaign.text, "title": campaign.title,
        "open_direct": campaign.open_direct, "image_url": campaign.image_url,
        "data": "\n".join(f"{k}={v}" for k, v in (campaign.data or {}).items()),
        "ttl_hours": campaign.ttl // 3600 if campaign.ttl else None, "target": audience.get("type", "all"),
        "keys": "\n".join(audience.get("keys") or ()), "group_ids": audience.get("group_ids") or [],
        "platforms": audience.get("platforms") or [],
        "offer_id": int(campaign.related_id) if campaign.related_type == "offer" and campaign.related_id else None,
        **_fallback_prefill(campaign),
    }


def _fallback_prefill(campaign: Campaign) -> dict[str, Any]:
    """The SMS fallback fields of a duplicated campaign (hours when the window is whole hours)."""
    seconds = campaign.sms_fallback_seconds
    if seconds is None:
        return {"sms_fallback": False}
    unit = "hours" if seconds % 3600 == 0 else "minutes"
    return {"sms_fallback": True, "sms_after": seconds // (3600 if unit == "hours" else 60), "sms_after_unit": unit,
            "sms_text": campaign.sms_fallback_text}


def save_draft(draft: CampaignDraft, *, actor: User | str | None) -> Campaign:
    """Create the draft once per form submission id (a double click returns the same draft)."""
    if draft.idempotency_key:
        existing = db.session.scalar(select(Campaign).where(Campaign.idempotency_key == draft.idempotency_key))
        if existing is not None:
            return existing
    if draft.related_type == "offer" and draft.related_id:
        offer = db.session.get(Offer, int(draft.related_id))
        if offer is None or not offer.is_current():
            raise ServiceError("That offer is not current and cannot be pushed.", field="offer_id")
        draft.source = "offer"
    sms_fallback.apply_to_draft(draft)
    campaign = campaigns.create_campaign(draft, actor=actor)
    audit.record("campaign.draft", actor=actor, obj=("campaign", campaign.id))
    db.session.commit()
    return campaign


@dataclass
class AudiencePreview:
    """The live count of the compose page."""

    count: int
    unknown_keys: list[str] = field(default_factory=list)
    error: str | None = None


def preview_audience(app_id: int | None, raw: dict[str, Any]) -> AudiencePreview:
    """How many devices the audience reaches (the engine's own query) and which keys are unknown."""
    try:
        spec = AudienceSpec.from_dict(raw)
    except ServiceError as exc:
        return AudiencePreview(0, error=exc.message)
    if app_id is None:
        return AudiencePreview(0, error="Choose an app.")
    unknown = match_keys(list(spec.keys)).unknown if spec.type == "keys" else []
    return AudiencePreview(count_audience(app_id, spec, settings.get("delivery.device_selection")), unknown)


def send_test(draft: CampaignDraft, keys: list[str], *, actor: User | str | None) -> Campaign:
    """Send the draft now to a few test subscribers (a separate campaign tagged `test`)."""
    if not keys or len(keys) > MAX_TEST_KEYS:
        raise ServiceError(f"Enter 1 to {MAX_TEST_KEYS} test subscriber keys.", field="test_keys")
    draft.audience = {"type": "keys", "keys": keys}
    draft.tag, draft.scheduled_at, draft.idempotency_key = "test", None, None
    draft.sms_fallback_seconds = draft.sms_fallback_text = None  # a test send never costs SMS
    campaign = campaigns.create_campaign(draft, actor=actor)
    campaigns.start(campaign, actor=actor)
    return campaign


def preview_fallback(app_id: int | None, raw: dict[str, Any], sms_text: str | None, push_text: str | None,
                     open_direct: str | None) -> sms_fallback.FallbackPreview:
    """The SMS fallback preview for the compose form (the same audience query as the count)."""
    return sms_fallback.preview(app_id, raw, settings.get("delivery.device_selection"), sms_text, push_text,
                                open_direct)
