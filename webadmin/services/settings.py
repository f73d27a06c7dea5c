"""Reading and changing console-wide settings, with their defaults in one place."""

from __future__ import annotations

from typing import Any

from webadmin.extensions import db
from webadmin.models.setting import Setting
from webadmin.models.user import User
from webadmin.services import ServiceError, audit

# key: (default, allowed values or None for free values)
DEFAULTS: dict[str, tuple[Any, tuple[Any, ...] | None]] = {
    # Loymax: deliver to every device of a subscriber, or only to the most recently registered one.
    "delivery.device_selection": ("all", ("all", "newest")),
    # Use Case 1 (social sharing): who gets "<name> shared <item>", and how often one sharer may trigger it.
    "share.audience": ("all", None),  # "all" or "group:<id>"
    "share.max_per_hour": (5, None),
}


def get(key: str) -> Any:
    """The stored value, or the default."""
    default, _ = DEFAULTS[key]
    row = db.session.get(Setting, key)
    return default if row is None else row.value


def put(key: str, value: Any, *, actor: User | str | None) -> None:
    """Change a setting (validated, audited, committed)."""
    if key not in DEFAULTS:
        raise ServiceError(f"Unknown setting {key!r}.", field=key)
    _, allowed = DEFAULTS[key]
    if allowed is not None and value not in allowed:
        raise ServiceError(f"{key} must be one of {', '.join(map(str, allowed))}.", field=key)
    row = db.session.get(Setting, key) or Setting(key=key)
    old = row.value
    row.value = value
    db.session.add(row)
    audit.record("setting.change", actor=actor, obj=("setting", key), old=old, new=value)
    db.session.commit()
