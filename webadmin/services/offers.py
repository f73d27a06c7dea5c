"""The offer and product catalog: list, create, edit, archive, and the pushes each offer was in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from flask import url_for
from sqlalchemy import Select, or_, select

from webadmin.extensions import db
from webadmin.models.app import App
from webadmin.models.campaign import Campaign
from webadmin.models.offer import OFFER_KINDS, Offer
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.services import ServiceError, audit, simulator
from webadmin.services.deep_links import validate_deep_link, validate_image_url

STATES = ("current", "upcoming", "expired", "archived")
PAGE_SIZE = 25
PUSHES_SHOWN = 50
MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_ID = 2**31 - 1  # PostgreSQL integer
_LEADING_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class OfferData:
    """What a marketer types for an offer or product."""

    kind: str
    app_id: int
    name: str
    description: str | None = None
    image_url: str | None = None
    valid_from: date | None = None
    valid_until: date | None = None
    deep_link: str | None = None


@dataclass
class OfferPage:
    """One page of the catalog (one extra row is fetched to know whether a next page exists)."""

    offers: list[Offer]
    page: int
    has_next: bool


@dataclass(frozen=True)
class Push:
    """A campaign about an offer, with its counts from the campaign counters."""

    campaign: Campaign

    @property
    def open_rate(self) -> float | None:
        """Opened / sent, or None before anything was sent."""
        return self.campaign.opened / self.campaign.sent if self.campaign.sent else None


def state_of(offer: Offer, now: datetime | None = None) -> str:
    """current | upcoming | expired | archived."""
    now = now or utcnow()
    if offer.archived:
        return "archived"
    if offer.valid_from is not None and now < offer.valid_from:
        return "upcoming"
    if offer.valid_until is not None and now > offer.valid_until:
        return "expired"
    return "current"


def push_refusal(offer: Offer, now: datetime | None = None) -> str | None:
    """Why the offer cannot be pushed now, or None when it can (the rule of `Offer.is_current`)."""
    state = state_of(offer, now)
    if state == "expired" and offer.valid_until is not None:
        return f"This {offer.kind} expired on {offer.valid_until:%Y-%m-%d}; expired {offer.kind}s cannot be pushed."
    if state == "upcoming" and offer.valid_from is not None:
        return f"This {offer.kind} starts on {offer.valid_from:%Y-%m-%d}; it can be pushed from then."
    if state == "archived":
        return f"This {offer.kind} is archived; archived {offer.kind}s cannot be pushed."
    return None


def _where_state(query: Select[Any], state: str, now: datetime) -> Select[Any]:
    """Narrow a query to offers in one state."""
    if state == "archived":
        return query.where(Offer.archived.is_(True))
    query = query.where(Offer.archived.is_(False))
    if state == "upcoming":
        return query.where(Offer.valid_from > now)
    if state == "expired":
        return query.where(Offer.valid_until < now)
    return query.where(
        or_(Offer.valid_from.is_(None), Offer.valid_from <= now),
        or_(Offer.valid_until.is_(None), Offer.valid_until >= now),
    )


def list_offers(*, kind: str | None = None, state: str | None = None, page: int = 1) -> OfferPage:
    """Offers and products, newest first, optionally of one kind and one state."""
    page = max(1, page)
    query = select(Offer).order_by(Offer.id.desc())
    if kind in OFFER_KINDS:
        query = query.where(Offer.kind == kind)
    if state in STATES:
        query = _where_state(query, state, utcnow())
    rows = db.session.scalars(query.offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)).all()
    return OfferPage(offers=list(rows[:PAGE_SIZE]), page=page, has_next=len(rows) > PAGE_SIZE)


def get_offer(offer_id: int) -> Offer | None:
    """An offer by id (None for ids no integer column can hold)."""
    return db.session.get(Offer, offer_id) if 0 < offer_id <= MAX_ID else None


def pushes_of(offer: Offer, limit: int = PUSHES_SHOWN) -> list[Push]:
    """The latest campaigns about this offer or product (from the campaign counters; messages are not scanned).

    Pushes name the `offers` row as related_type "offer"; /share once recorded the item's kind ("product"), so
    both kinds are read.
    """
    campaigns = db.session.scalars(
        select(Campaign)
        .where(Campaign.related_type.in_(OFFER_KINDS), Campaign.related_id == str(offer.id))
        .order_by(Campaign.id.desc())
        .limit(limit)
    )
    return [Push(c) for c in campaigns]


def default_deep_link(kind: str, offer_id: int, scheme: str | None) -> str | None:
    """`<scheme>://offers/<id>` (or `products/<id>`); None when the app has no scheme."""
    return f"{scheme}://{kind}s/{offer_id}" if scheme else None


def _start_of(day: date | None) -> datetime | None:
    """Midnight UTC at the start of a day."""
    return datetime.combine(day, time.min, UTC) if day else None


def _end_of(day: date | None) -> datetime | None:
    """The last instant of a day in UTC: an offer valid until a date is valid all that day."""
    return datetime.combine(day, time.max, UTC) if day else None


def _clean(data: OfferData) -> tuple[App, dict[str, Any]]:
    """Validate what was typed: the app and the column values (the deep link None when left empty)."""
    if data.kind not in OFFER_KINDS:
        raise ServiceError("Choose offer or product.", field="kind")
    app = db.session.get(App, data.app_id)
    if app is None:
        raise ServiceError("Choose an app.", field="app_id")
    name = (data.name or "").strip()
    if not name or len(name) > MAX_NAME:
        raise ServiceError(f"A name of 1 to {MAX_NAME} characters is required.", field="name")
    description = (data.description or "").strip() or None
    if description and len(description) > MAX_DESCRIPTION:
        raise ServiceError(f"The description is longer than {MAX_DESCRIPTION:,} characters.", field="description")
    if data.valid_from and data.valid_until and data.valid_until < data.valid_from:
        raise ServiceError("“Valid until” cannot be before “valid from”.", field="valid_until")
    values = {
        "kind": data.kind,
        "app_id": app.id,
        "name": name,
        "description": description,
        "image_url": validate_image_url(data.image_url),
        "valid_from": _start_of(data.valid_from),
        "valid_until": _end_of(data.valid_until),
        "deep_link": validate_deep_link(data.deep_link, app.deep_link_scheme, field="deep_link"),
    }
    return app, values


def create_offer(data: OfferData, *, actor: User | str | None) -> Offer:
    """Add an offer or product; its deep link defaults to `<scheme>://offers/<id>`."""
    app, values = _clean(data)
    offer = Offer(**values)
    db.session.add(offer)
    db.session.flush()  # the id goes into the default deep link
    offer.deep_link = offer.deep_link or default_deep_link(offer.kind, offer.id, app.deep_link_scheme)
    audit.record("offer.create", actor=actor, obj=("offer", offer.id), name=offer.name, kind=offer.kind)
    db.session.commit()
    return offer


def update_offer(offer: Offer, data: OfferData, *, actor: User | str | None) -> Offer:
    """Change an offer; a deep link left at its default follows a change of kind or app."""
    old_app = db.session.get(App, offer.app_id)
    old_default = default_deep_link(offer.kind, offer.id, old_app.deep_link_scheme if old_app else None)
    app, values = _clean(data)
    if values["deep_link"] is None or values["deep_link"] == old_default:
        values["deep_link"] = default_deep_link(data.kind, offer.id, app.deep_link_scheme)
    changed = sorted(k for k, v in values.items() if getattr(offer, k) != v)
    for key, value in values.items():
        setattr(offer, key, value)
    audit.record("offer.update", actor=actor, obj=("offer", offer.id), name=offer.name, changed=changed)
    db.session.commit()
    return offer


def archive_offer(offer: Offer, *, actor: User | str | None) -> None:
    """Archive: the offer stays in the list (filter "archived") and on its campaigns, but cannot be pushed."""
    if offer.archived:
        raise ServiceError(f"“{offer.name}” is already archived.")
    offer.archived = True
    audit.record("offer.archive", actor=actor, obj=("offer", offer.id), name=offer.name)
    db.session.commit()


def _resolve(rest: str) -> str | None:
    """The console page of the offer an `offers/<id>` or `products/<id>` deep link names."""
    match = _LEADING_DIGITS.match(rest)
    return url_for("offers.detail", offer_id=int(match.group())) if match else None


# The Simulator opens an offer's page when a push with its deep link is tapped.
simulator.DEEP_LINK_RESOLVERS.extend([("offers/", _resolve), ("products/", _resolve)])
