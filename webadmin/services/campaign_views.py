"""Read models for the campaign pages: filtered lists and the per-message log (paged, index-friendly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from webadmin.extensions import db
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.services import campaigns

PAGE_SIZE = 25
HELD = "held"  # a status filter of its own: scheduled, but held by the scheduler for a person to confirm
LOG_PAGE_SIZE = 50


@dataclass
class Page:
    """A page of rows, with whether another follows (one extra row is fetched instead of counting)."""

    rows: list[Any]
    page: int
    has_next: bool


def _page(query: Any, page: int, size: int) -> Page:
    """Offset paging with one look-ahead row."""
    page = max(1, page)
    rows = list(db.session.scalars(query.offset((page - 1) * size).limit(size + 1)))
    return Page(rows[:size], page, len(rows) > size)


def campaign_list(*, status: str | None, source: str | None, q: str | None, page: int) -> Page:
    """Campaigns newest first, filtered by status (or "held"), source and a text search."""
    query = select(Campaign).order_by(Campaign.id.desc())
    if status == HELD:
        query = query.where(campaigns.held_condition())
    elif status:
        query = query.where(Campaign.status == status)
    if source:
        query = query.where(Campaign.source == source)
    if q:
        query = query.where(Campaign.text.contains(q, autoescape=True) | Campaign.title.contains(q, autoescape=True))
    return _page(query, page, PAGE_SIZE)


def message_log(campaign_id: int, *, key: str | None, state: str | None, error: str | None, page: int) -> Page:
    """A campaign's messages, filterable by subscriber key prefix, state and error text."""
    query = select(Message).where(Message.campaign_id == campaign_id).order_by(Message.id)
    if key:
        query = query.where(Message.recipient.startswith(key.strip().lower(), autoescape=True))
    if state:
        query = query.where(Message.state == state)
    if error:
        query = query.where(Message.error.contains(error, autoescape=True))
    return _page(query, page, LOG_PAGE_SIZE)
