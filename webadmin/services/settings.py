"""Reading and changing console-wide settings, with their defaults in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from webadmin.extensions import db
from webadmin.models.audience import Group
from webadmin.models.setting import Setting
from webadmin.models.user import User
from webadmin.services import ServiceError, audit

# key: (default, allowed values or None for free values)
DEFAULTS: dict[str, tuple[Any, tuple[Any, ...] | None]] = {
    # Loymax: deliver to every device of a subscriber, or only to the most recently registered one.
    "delivery.device_selection": ("all", ("all", "newest")),
    # Use Case 1 (social sharing): who gets "<name> shared <item>", and how often one sharer may trigger it.
    "share.audience": ("all", None),  # "all" or "group:<id>" of an existing group
    "share.max_per_hour": (5, None),  # per sharer
    "share.max_per_app_per_hour": (100, None),  # all sharers of one app together: a cap on rotating accounts
}
MAX_SHARES_PER_HOUR = 10_000


def _share_audience(value: Any) -> str:
    """"all", or "group:<id>" of a group that exists."""
    text = str(value)
    if text == "all":
        return text
    if text.startswith("group:") and text[6:].isdigit() and len(text) < 16:
        if db.session.get(Group, int(text[6:])) is not None:
            return text
    raise ServiceError("Share pushes go to all users or to an existing group.", field="share.audience")


def _per_hour(key: str) -> Callable[[Any], int]:
    """A validator of a positive hourly limit."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARES_PER_HOUR:
            raise ServiceError(f"The limit is a whole number from 1 to {MAX_SHARES_PER_HOUR:,}.", field=key)
        return value

    return check


# Free-valued settings check (and normalise) their values here.
VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "share.audience": _share_audience,
    "share.max_per_hour": _per_hour("share.max_per_hour"),
    "share.max_per_app_per_hour": _per_hour("share.max_per_app_per_hour"),
}


def get(key: str) -> Any:
    """The stored value, or the default."""
    default, _ = DEFAULTS[key]
    row = db.session.get(Setting, key)
    return default if row is None else row.value


def _checked(key: str, value: Any) -> Any:
    """The value to store for `key`; ServiceError naming the setting when it is not allowed."""
    if key not in DEFAULTS:
        raise ServiceError(f"Unknown setting {key!r}.", field=key)
    _, allowed = DEFAULTS[key]
    if allowed is not None and value not in allowed:
        raise ServiceError(f"{key} must be one of {', '.join(map(str, allowed))}.", field=key)
    check = VALIDATORS.get(key)
    return check(value) if check else value


def _stage(key: str, value: Any, actor: User | str | None) -> None:
    """Write one checked value and its audit row into the current transaction."""
    row = db.session.get(Setting, key) or Setting(key=key)
    old = row.value
    row.value = value
    db.session.add(row)
    audit.record("setting.change", actor=actor, obj=("setting", key), old=old, new=value)


def put(key: str, value: Any, *, actor: User | str | None) -> None:
    """Change a setting (validated, audited, committed)."""
    _stage(key, _checked(key, value), actor)
    db.session.commit()


def put_many(values: dict[str, Any], *, actor: User | str | None) -> None:
    """Change several settings at once: all are checked before any is written; unchanged ones are not audited."""
    checked = {key: _checked(key, value) for key, value in values.items()}
    for key, value in checked.items():
        if value != get(key):
            _stage(key, value, actor)
    db.session.commit()
