"""What the compose page needs: choices, prefills (offer, duplicate, template), idempotent drafts, counts, tests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Device, Group, Subscriber
from webadmin.models.campaign import Campaign, CampaignStatus
from webadmin.models.message import Template
from webadmin.models.offer import OFFER_KINDS, Offer
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.providers.simulator import TOKEN_PREFIX
from webadmin.sending.audience import AudienceSpec, count_audience
from webadmin.services import ServiceError, audit, campaigns, settings, sms_fallback, templates
from webadmin.services.audience import match_keys, normalize_keys
from webadmin.services.campaigns import CampaignDraft
from webadmin.services.offers import push_refusal

OFFER_TITLE = "Exclusive Offer: {name}"
# A push about an offer or a product names the `offers` row: related_type "offer" whatever its kind (as pymess names
# a related object by its model). Older /share pushes said "product"; readers accept both (OFFER_KINDS).
OFFER_RELATED_TYPE = "offer"
MAX_TEST_KEYS = 20
MAX_TEST_DEVICES = 20
SIMULATED_SHOWN = 20


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


@dataclass
class Prefill:
    """Values for a new compose form, and what the marketer should know about them."""

    values: dict[str, Any]
    notice: str | None = None


def offer_prefill(offer_id: int) -> Prefill:
    """The Push Offer action: "Exclusive Offer: <name>" with the offer's deep link; expired offers refused."""
    offer = db.session.get(Offer, offer_id) if 0 < offer_id < 2**31 else None
    if offer is None:
        raise ServiceError("No such offer.", code="not_found")
    if not offer.is_current():
        raise ServiceError(f"“{offer.name}” is not current (expired, not yet valid or archived) and cannot be pushed.")
    return Prefill({"app_id": offer.app_id, "text": OFFER_TITLE.format(name=offer.name), "offer_id": offer.id,
                    "open_direct": offer.deep_link, "image_url": offer.image_url})


def _related_offer(campaign: Campaign) -> tuple[int | None, str | None, str | None]:
    """(offer id, its deep link, why it cannot be pushed any more) of a campaign about an offer."""
    if campaign.related_type not in OFFER_KINDS or not (campaign.related_id or "").isdigit():
        return None, None, None
    offer = db.session.get(Offer, int(campaign.related_id)) if int(campaign.related_id) < 2**31 else None
    if offer is None:
        return None, None, "The offer of the original push no longer exists; it was left out."
    refusal = push_refusal(offer)
    if refusal is not None:
        return None, offer.deep_link, f"“{offer.name}” was left out: {refusal} Choose another offer or link."
    return offer.id, offer.deep_link, None


def campaign_prefill(campaign_id: int) -> Prefill:
    """Duplicate as new: the campaign's content and audience; an offer no longer current is left out, with why."""
    campaign = db.session.get(Campaign, campaign_id) if 0 < campaign_id < 2**31 else None
    if campaign is None:
        raise ServiceError("No such campaign.", code="not_found")
    audience = campaign.audience or {}
    offer_id, offer_link, notice = _related_offer(campaign)
    open_direct = campaign.open_direct
    if offer_id is None and offer_link and open_direct == offer_link:
        open_direct = None  # the link leads to the offer that can no longer be pushed
    target = audience.get("type", "all")
    if target == "devices":  # a test send: the new push starts from no audience choice
        target = "all"
    values = {
        "app_id": campaign.app_id, "text": campaign.text, "title": campaign.title,
        "open_direct": open_direct, "image_url": campaign.image_url,
        "data": "\n".join(f"{k}={v}" for k, v in (campaign.data or {}).items()),
        "ttl_hours": campaign.ttl // 3600 if campaign.ttl else None, "target": target,
        "keys": "\n".join(audience.get("keys") or ()), "group_ids": audience.get("group_ids") or [],
        "platforms": audience.get("platforms") or [], "offer_id": offer_id,
        **_fallback_prefill(campaign),
    }
    return Prefill(values, notice)


@dataclass(frozen=True)
class TemplateFill:
    """A template rendered for the compose fields."""

    title: str | None
    text: str
    open_direct: str | None


def template_fill(slug: str, context_text: str | None) -> TemplateFill:
    """Render an active template in the sandbox with the typed context, for the title, text and link fields.

    A campaign says the same to everyone, so its placeholders are filled once here, from the context the marketer
    types (JSON); a placeholder left without a value is refused with its name, and nothing is filled.
    """
    template = db.session.scalar(select(Template).where(Template.slug == slug))
    if template is None or not templates.sendable(template):
        raise ServiceError("Choose an active template.", field="template_slug")
    try:
        rendered = templates.preview(template.title, template.body, context_text)
    except ServiceError as exc:
        field_name = "template_context" if exc.field == "context" else "template_slug"
        raise ServiceError(f"Template “{slug}”: {exc.message}", field=field_name, code=exc.code) from exc
    return TemplateFill(title=rendered.title, text=rendered.body, open_direct=template.open_direct)


def _fallback_prefill(campaign: Campaign) -> dict[str, Any]:
    """The SMS fallback fields of a duplicated campaign (hours when the window is whole hours)."""
    seconds = campaign.sms_fallback_seconds
    if seconds is None:
        return {"sms_fallback": False}
    unit = "hours" if seconds % 3600 == 0 else "minutes"
    return {"sms_fallback": True, "sms_after": seconds // (3600 if unit == "hours" else 60), "sms_after_unit": unit,
            "sms_text": campaign.sms_fallback_text}


def content_hash(draft: CampaignDraft) -> str:
    """A digest of everything the draft says and to whom (not its submission id)."""
    values = {k: v for k, v in vars(draft).items() if k not in ("idempotency_key", "request_hash")}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def _existing_draft(key: str) -> Campaign | None:
    """The campaign an earlier submission with this key made."""
    return db.session.scalar(select(Campaign).where(Campaign.idempotency_key == key))


def _submission_prefix(submission_key: str) -> str:
    """The part of a compose draft's key that names the form submission it came from."""
    return "compose:" + hashlib.sha256(submission_key.encode()).hexdigest()[:40] + ":"


def _replace_earlier_drafts(prefix: str, keep: str, *, actor: User | str | None) -> None:
    """Delete the drafts an earlier content of the same form made (Back, edit, submit): only the latest is kept.
    A draft that was started, scheduled or cancelled meanwhile is no longer a draft and stays."""
    earlier = db.session.scalars(
        select(Campaign).where(Campaign.idempotency_key.startswith(prefix, autoescape=True),
                               Campaign.idempotency_key != keep, Campaign.status == CampaignStatus.DRAFT)
    ).all()
    for campaign in earlier:
        audit.record("campaign.draft_replaced", actor=actor, obj=("campaign", campaign.id))
        db.session.delete(campaign)


def save_draft(draft: CampaignDraft, *, actor: User | str | None) -> Campaign:
    """Create the draft once per form submission and content: a double click returns the same draft; the same
    form submitted again with other content (Back, edit, submit) makes a new draft with that content and deletes
    the one the earlier content made, so the campaign list holds no stale drafts."""
    prefix = None
    if draft.idempotency_key:
        draft.request_hash = content_hash(draft)
        # One key per (submission, content): the unique index then settles concurrent duplicates.
        prefix = _submission_prefix(draft.idempotency_key)
        draft.idempotency_key = prefix + hashlib.sha256(draft.request_hash.encode()).hexdigest()[:40]
        if (existing := _existing_draft(draft.idempotency_key)) is not None:
            return existing
    if draft.related_type in OFFER_KINDS and draft.related_id:
        offer = db.session.get(Offer, int(draft.related_id))
        if offer is None or not offer.is_current():
            raise ServiceError("That offer is not current and cannot be pushed.", field="offer_id")
        if draft.scheduled_at is not None and not offer.is_current(draft.scheduled_at):
            raise ServiceError(f"“{offer.name}” is no longer current at the chosen time; pick an earlier time or "
                               "another offer.", field="offer_id")
        draft.source, draft.related_type = "offer", OFFER_RELATED_TYPE
    sms_fallback.apply_to_draft(draft)
    try:
        campaign = campaigns.create_campaign(draft, actor=actor)
        audit.record("campaign.draft", actor=actor, obj=("campaign", campaign.id))
        if prefix is not None:
            _replace_earlier_drafts(prefix, draft.idempotency_key, actor=actor)
        db.session.commit()
    except IntegrityError:
        # A second click raced the first one past the lookup: its draft is the one to show.
        db.session.rollback()
        existing = _existing_draft(draft.idempotency_key) if draft.idempotency_key else None
        if existing is None:
            raise
        return existing
    return campaign


@dataclass
class AudiencePreview:
    """The live count of the compose page."""

    count: int
    unknown_keys: list[str] = field(default_factory=list)
    error: str | None = None
    app_send_channels: list[str] = field(default_factory=list)  # Marketing Cloud channels that would use messageApp


def preview_audience(app_id: int | None, raw: dict[str, Any]) -> AudiencePreview:
    """How many devices the audience reaches (the engine's own query) and which keys are unknown."""
    try:
        spec = AudienceSpec.from_dict(raw)
    except ServiceError as exc:
        return AudiencePreview(0, error=exc.message)
    if app_id is None:
        return AudiencePreview(0, error="Choose an app.")
    unknown = match_keys(list(spec.keys)).unknown if spec.type == "keys" else []
    return AudiencePreview(count_audience(app_id, spec, settings.get("delivery.device_selection")), unknown,
                           app_send_channels=_app_send_channels(app_id, spec))


def _app_send_channels(app_id: int, spec: AudienceSpec) -> list[str]:
    """The enabled Marketing Cloud channels that would send this audience as one messageApp request: the count
    above is then webadmin's, not the one Marketing Cloud will reach."""
    from webadmin.sending.app_sends import wants_app_send
    from webadmin.sending.channels import routes_for_app

    routes = set(routes_for_app(app_id).values())
    return sorted(r.label for r in routes if wants_app_send(spec.to_dict(), r))


@dataclass(frozen=True)
class TestDevice:
    """A device a test push can go to."""

    id: int
    platform: str
    token_hint: str
    subscriber_key: str | None
    simulated: bool


@dataclass
class TestDevices:
    """The test device picker: the devices, and the typed keys that found none."""

    devices: list[TestDevice]
    unknown_keys: list[str] = field(default_factory=list)
    without_devices: list[str] = field(default_factory=list)


def _test_device(device: Device, key: str | None) -> TestDevice:
    """A picker row (a real device's token is shown only by its end)."""
    simulated = device.token.startswith(TOKEN_PREFIX)
    hint = device.token if simulated else f"…{device.token[-6:]}"
    return TestDevice(device.id, device.platform, hint, key, simulated)


def _devices_query(app_id: int) -> Any:
    """The app's active devices with their subscriber keys."""
    return (select(Device, Subscriber.subscriber_key).outerjoin(Subscriber, Subscriber.id == Device.subscriber_id)
            .where(Device.app_id == app_id, Device.status == "active"))


def _devices_of_keys(app_id: int, keys: list[str]) -> TestDevices:
    """The active devices of the given subscribers in the app; the keys of no subscriber and of none with a device."""
    matched = match_keys(keys)
    rows = db.session.execute(_devices_query(app_id).where(Subscriber.subscriber_key.in_(matched.found))
                              .order_by(Subscriber.subscriber_key, Device.id)).all() if matched.found else []
    devices = [_test_device(device, key) for device, key in rows]
    with_devices = {d.subscriber_key for d in devices}
    return TestDevices(devices, matched.unknown, [k for k in matched.found if k not in with_devices])


def test_devices(app_id: int | None, keys: list[str] | None = None) -> TestDevices:
    """The app's simulated devices, then the active devices of the given subscribers (unknown keys reported)."""
    if app_id is None:
        return TestDevices([])
    rows = db.session.execute(_devices_query(app_id).where(Device.token.startswith(TOKEN_PREFIX))
                              .order_by(Device.id.desc()).limit(SIMULATED_SHOWN)).all()
    found = _devices_of_keys(app_id, normalize_keys(keys or [])[:MAX_TEST_KEYS])
    devices = {device.id: _test_device(device, key) for device, key in rows}
    devices.update((d.id, d) for d in found.devices)
    return TestDevices(list(devices.values()), found.unknown_keys, found.without_devices)


@dataclass
class TestSend:
    """What a test send did."""

    campaign: Campaign
    unknown_keys: list[str]
    without_devices: list[str]


def _chosen_devices(app_id: int, device_ids: list[int], keys: list[str]) -> tuple[list[int], TestDevices]:
    """The chosen devices that are active devices of the app, plus the typed subscribers' devices (and which keys
    found none)."""
    ids = [i for i in dict.fromkeys(device_ids) if 0 < i < 2**31]
    chosen = set(db.session.scalars(select(Device.id).where(Device.app_id == app_id, Device.status == "active",
                                                            Device.id.in_(ids)))) if ids else set()
    found = _devices_of_keys(app_id, normalize_keys(keys))
    chosen.update(d.id for d in found.devices)
    return sorted(chosen), found


def send_test(draft: CampaignDraft, device_ids: list[int], keys: list[str], *,
              actor: User | str | None) -> TestSend:
    """Send the draft now to chosen test devices and the devices of typed subscriber keys (a campaign tagged
    `test`); refused when nothing would receive it."""
    if len(normalize_keys(keys)) > MAX_TEST_KEYS:
        raise ServiceError(f"Enter at most {MAX_TEST_KEYS} test subscriber keys.", field="test_keys")
    chosen, found = _chosen_devices(draft.app_id, device_ids, keys)
    if not chosen:
        reason = describe_missing(found)
        raise ServiceError("No test device would receive this push: choose a test device or enter the key of a "
                           f"subscriber with a device in this app.{' ' + reason if reason else ''}",
                           field="test_device_ids")
    if len(chosen) > MAX_TEST_DEVICES:
        raise ServiceError(f"Choose at most {MAX_TEST_DEVICES} test devices.", field="test_device_ids")
    draft.audience = {"type": "devices", "device_ids": chosen}
    draft.tag, draft.scheduled_at, draft.idempotency_key = "test", None, None
    draft.sms_fallback_seconds = draft.sms_fallback_text = None  # a test send never costs SMS
    campaign = campaigns.create_campaign(draft, actor=actor)
    campaigns.start(campaign, actor=actor)
    return TestSend(campaign, found.unknown_keys, found.without_devices)


def describe_missing(found: TestDevices | TestSend) -> str:
    """"Unknown key(s): …. No device in this app: …." for the keys that found no device ("" when all did)."""
    parts = []
    if found.unknown_keys:
        parts.append(f"Unknown key(s): {', '.join(found.unknown_keys)}.")
    if found.without_devices:
        parts.append(f"No active device in this app: {', '.join(found.without_devices)}.")
    return " ".join(parts)


def preview_fallback(app_id: int | None, raw: dict[str, Any], sms_text: str | None, push_text: str | None,
                     open_direct: str | None) -> sms_fallback.FallbackPreview:
    """The SMS fallback preview for the compose form (the same audience query as the count)."""
    return sms_fallback.preview(app_id, raw, settings.get("delivery.device_selection"), sms_text, push_text,
                                open_direct)
