"""Reading the audit log."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from webadmin.extensions import db
from webadmin.models.audit import AuditEvent

PAGE_SIZE = 50


@dataclass
class AuditPage:
    """One page of audit events (one extra row is fetched to know whether a next page exists)."""

    events: list[AuditEvent]
    page: int
    has_next: bool


def audit_page(*, action: str | None, actor: str | None, page: int) -> AuditPage:
    """Events newest first; `action` matches a prefix ("user." for all user changes)."""
    page = max(1, page)
    query = select(AuditEvent).order_by(AuditEvent.id.desc())
    if action:
        query = query.where(AuditEvent.action.startswith(action, autoescape=True))
    if actor:
        query = query.where(AuditEvent.actor.contains(actor.lower(), autoescape=True))
    rows = db.session.scalars(query.offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)).all()
    return AuditPage(events=list(rows[:PAGE_SIZE]), page=page, has_next=len(rows) > PAGE_SIZE)
