"""Writing to the audit log."""

from __future__ import annotations

from typing import Any

from webadmin.extensions import db
from webadmin.models.audit import AuditEvent
from webadmin.models.user import User


def record(
    action: str,
    *,
    actor: User | str | None,
    obj: tuple[str, object] | None = None,
    address: str | None = None,
    **detail: Any,
) -> AuditEvent:
    """Add an audit row to the current transaction (committed with the change it describes)."""
    event = AuditEvent(
        action=action,
        actor_id=actor.id if isinstance(actor, User) else None,
        actor=actor.email if isinstance(actor, User) else (actor or "system"),
        object_type=obj[0] if obj else None,
        object_id=str(obj[1]) if obj else None,
        address=address,
        detail=detail,
    )
    db.session.add(event)
    return event
