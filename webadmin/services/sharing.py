"""Use Case 1 of the Nibs seed: a consumer shared an offer or product → push "<name> shared <item>"."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import func, select

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.campaign import Campaign
from webadmin.models.offer import Offer
from webadmin.models.types import utcnow
from webadmin.services import ServiceError, campaigns, settings
from webadmin.services.campaigns import CampaignDraft


class RateLimited(ServiceError):
    """The sharer pushed too often; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, code="rate_limited")
        self.retry_after = retry_after


def _sharer_tag(sharer_key: str) -> str:
    """A short stable tag per sharer (keys can be longer than the tag column)."""
    return "share:" + hashlib.sha256(sharer_key.strip().lower().encode()).hexdigest()[:24]


def _audience() -> dict:
    """The audience configured in Settings (all users by default)."""
    value = str(settings.get("share.audience"))
    if value.startswith("group:") and value[6:].isdigit():
        return {"type": "groups", "group_ids": [int(value[6:])]}
    return {"type": "all"}


def _check_rate(tag: str) -> None:
    """At most share.max_per_hour pushes per sharer in the last hour."""
    limit = int(settings.get("share.max_per_hour"))
    since = utcnow() - timedelta(hours=1)
    recent = db.session.execute(
        select(func.count(Campaign.id), func.min(Campaign.created_at))
        .where(Campaign.tag == tag, Campaign.created_at >= since)
    ).one()
    if recent[0] >= limit:
        retry = int((recent[1] + timedelta(hours=1) - utcnow()).total_seconds()) + 1
        raise RateLimited(f"This subscriber already shared {limit} times in the last hour.", max(1, retry))


def share(app: App, sharer_key: str, sharer_name: str, item_id: int, *, actor: str) -> Campaign:
    """Push "<name> shared <item>" with the item's deep link to the configured audience, rate-limited per sharer."""
    item = db.session.get(Offer, item_id)
    if item is None or item.app_id != app.id:
        raise ServiceError("No such offer or product in this app.", field="itemId", code="not_found")
    if not item.is_current():
        raise ServiceError("This offer is not current and cannot be shared.", field="itemId")
    tag = _sharer_tag(sharer_key)
    _check_rate(tag)
    draft = CampaignDraft(app_id=app.id, text=f"{sharer_name.strip()} shared {item.name}", open_direct=item.deep_link,
                          image_url=item.image_url, audience=_audience(), source="social", related_type=item.kind,
                          related_id=str(item.id), tag=tag)
    campaign = campaigns.create_campaign(draft, actor=actor)
    campaigns.start(campaign, actor=actor)
    return campaign
