"""Use Case 1 of the Nibs seed: a consumer shared an offer or product → push "<name> shared <item>"."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.audience import Device, Group, Subscriber
from webadmin.models.campaign import Campaign, CampaignStatus
from webadmin.models.offer import Offer
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.services import ServiceError, campaigns, settings
from webadmin.services.campaigns import CampaignDraft

AUDIENCE = "share.audience"
PER_SHARER = "share.max_per_hour"
PER_APP = "share.max_per_app_per_hour"
WINDOW = timedelta(hours=1)


class RateLimited(ServiceError):
    """The sharer (or the app) pushed too often; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, code="rate_limited")
        self.retry_after = retry_after


def _sharer_tag(sharer_key: str) -> str:
    """A short stable tag per sharer (keys can be longer than the tag column)."""
    return "share:" + hashlib.sha256(sharer_key.strip().lower().encode()).hexdigest()[:24]


def audience_group_id(value: object) -> int | None:
    """The group id of a "group:<id>" audience setting, else None."""
    text = str(value)
    return int(text[6:]) if text.startswith("group:") and text[6:].isdigit() and len(text) < 16 else None


def _audience() -> dict:
    """The audience configured in Settings (all users by default); refused if its group was deleted since."""
    group_id = audience_group_id(settings.get(AUDIENCE))
    if group_id is None:
        return {"type": "all"}
    if db.session.get(Group, group_id) is None:
        raise ServiceError("The group shares are pushed to no longer exists; an admin must choose the share "
                           "audience again in Settings → Sharing.", code="conflict")
    return {"type": "groups", "group_ids": [group_id]}


def _require_sharer(app: App, sharer_key: str) -> None:
    """Only a subscriber with a device in this app can share: made-up keys would each get a fresh rate limit."""
    known = db.session.scalar(
        select(Device.id).join(Subscriber, Subscriber.id == Device.subscriber_id)
        .where(Subscriber.subscriber_key == sharer_key.strip().lower(), Device.app_id == app.id).limit(1)
    )
    if known is None:
        raise ServiceError("No subscriber with this key has a device in this app.", field="sharerKey",
                           code="not_found")


def _lock_shares(app_id: int) -> None:
    """Serialise the rate check and the insert of an app's shares until the next commit.

    PostgreSQL: a row lock on the app. SQLite: a write as the transaction's first statement takes the database's
    write lock at once (what BEGIN IMMEDIATE does), so the count below cannot be read by two requests at a time.
    """
    db.session.commit()  # end whatever read transaction the request began: the lock must come first
    if db.engine.dialect.name == "postgresql":
        db.session.execute(select(App.id).where(App.id == app_id).with_for_update())
    else:
        db.session.execute(update(App).where(App.id == app_id).values(id=App.id))


def _retry_after(oldest: datetime) -> int:
    """Seconds until the oldest share in the window leaves it."""
    return max(1, int((oldest + WINDOW - utcnow()).total_seconds()) + 1)


def _check_rate(app_id: int, tag: str) -> None:
    """At most share.max_per_hour pushes per sharer and share.max_per_app_per_hour per app in the last hour."""
    since = utcnow() - WINDOW
    sharer = db.session.execute(
        select(func.count(Campaign.id), func.min(Campaign.created_at))
        .where(Campaign.tag == tag, Campaign.created_at >= since)
    ).one()
    limit = int(settings.get(PER_SHARER))
    if sharer[0] >= limit:
        raise RateLimited(f"This subscriber already shared {limit} times in the last hour.", _retry_after(sharer[1]))
    whole_app = db.session.execute(
        select(func.count(Campaign.id), func.min(Campaign.created_at))
        .where(Campaign.app_id == app_id, Campaign.source == "social", Campaign.created_at >= since)
    ).one()
    app_limit = int(settings.get(PER_APP))
    if whole_app[0] >= app_limit:
        raise RateLimited(f"This app already pushed {app_limit} shares in the last hour.", _retry_after(whole_app[1]))


def share(app: App, sharer_key: str, sharer_name: str, item_id: int, *, actor: str) -> Campaign:
    """Push "<name> shared <item>" with the item's deep link to the configured audience, rate-limited per sharer
    and per app."""
    item = db.session.get(Offer, item_id)
    if item is None or item.app_id != app.id:
        raise ServiceError("No such offer or product in this app.", field="itemId", code="not_found")
    if not item.is_current():
        raise ServiceError("This offer is not current and cannot be shared.", field="itemId")
    _require_sharer(app, sharer_key)
    audience, tag = _audience(), _sharer_tag(sharer_key)
    text, link, image = f"{sharer_name.strip()} shared {item.name}", item.deep_link, item.image_url
    _lock_shares(app.id)
    _check_rate(app.id, tag)
    draft = CampaignDraft(app_id=app.id, text=text, open_direct=link, image_url=image, audience=audience,
                          source="social", related_type="offer", related_id=str(item_id), tag=tag)
    campaign = campaigns.create_campaign(draft, actor=actor)
    db.session.commit()  # counted from here on, and the lock is released before the audience is materialised
    try:
        campaigns.start(campaign, actor=actor)
    except Exception:
        _forget_unstarted(campaign.id)
        raise
    return campaign


def _forget_unstarted(campaign_id: int) -> None:
    """A share whose start failed pushed nothing: delete its draft so it does not count against the limits."""
    db.session.rollback()
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is not None and campaign.status == CampaignStatus.DRAFT:
        db.session.delete(campaign)
        db.session.commit()


FORM_FIELDS = {AUDIENCE: "audience", PER_SHARER: "max_per_hour", PER_APP: "max_per_app_per_hour"}


def configure(audience: str, max_per_hour: int, max_per_app_per_hour: int, *, actor: User | str | None) -> None:
    """Settings → Sharing: who gets share pushes and the two hourly limits (validated, audited, one commit)."""
    try:
        settings.put_many({AUDIENCE: audience, PER_SHARER: max_per_hour, PER_APP: max_per_app_per_hour}, actor=actor)
    except ServiceError as exc:
        raise ServiceError(exc.message, field=FORM_FIELDS.get(exc.field or "", exc.field), code=exc.code) from exc


def current_settings() -> dict[str, object]:
    """The Sharing settings as the form shows them."""
    return {"audience": str(settings.get(AUDIENCE)), "max_per_hour": settings.get(PER_SHARER),
            "max_per_app_per_hour": settings.get(PER_APP)}


def group_choices() -> list[Group]:
    """The groups share pushes can go to, by name."""
    return list(db.session.scalars(select(Group).order_by(Group.name)))
