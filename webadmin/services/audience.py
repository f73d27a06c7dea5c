"""Audience operations shared by the console and the API: subscriber keys, devices, subscribers, group members."""

from __future__ import annotations

import enum
import functools
import re
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, exists, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from webadmin import driver_sql
from webadmin.extensions import db
from webadmin.models.app import PLATFORMS, App
from webadmin.models.audience import Device, Group, GroupMember, Subscriber
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.services import ServiceError, audit

# Rules shared by the service checks and the API's OpenAPI document (one source for both).
KEY_MAX_LENGTH = 254
TOKEN_MAX_LENGTH = 1024
# Unicode whitespace that str.strip() removes, minus the control characters refused anyway.
_BLANK = "\\x20\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000"
_CONTROL = "\\x00-\\x1F\\x7F-\\x9F"
TEXT_PATTERN = f"^[^{_CONTROL}]*$"
KEY_PATTERN = f"^[^{_CONTROL}]*[^{_CONTROL}{_BLANK}][^{_CONTROL}]*$"
TOKEN_PATTERN = "^[A-Za-z0-9_:~-][A-Za-z0-9_:.~-]*$"
PHONE_PATTERN = "^\\+[1-9][0-9]{6,14}$"
LOCALE_PATTERN = "^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$"
LOCALE_MAX_LENGTH = 35
APP_VERSION_MAX_LENGTH = 40
DISPLAY_NAME_MAX_LENGTH = 200
ATTRIBUTE_NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
ATTRIBUTE_MAX_COUNT = 100
ATTRIBUTE_VALUE_MAX_LENGTH = 1000
# IN-list size for key lookups: well under SQLite's and PostgreSQL's bind-parameter limits.
KEY_CHUNK = 1000


class Unset(enum.Enum):
    """Marks a field the caller did not send (as opposed to None, which clears it)."""

    UNSET = "unset"


UNSET = Unset.UNSET


@functools.cache
def time_zones() -> frozenset[str]:
    """IANA time zone names this server knows ("Factory" is a placeholder, not a place)."""
    return frozenset(zoneinfo.available_timezones() - {"Factory"})


@dataclass(frozen=True)
class DeviceRegistration:
    """What an app reports about one install; UNSET fields keep their stored value, None clears them."""

    platform: str | None = None  # required when the token is new
    subscriber_key: str | None | Unset = UNSET
    locale: str | None | Unset = UNSET
    time_zone: str | None | Unset = UNSET
    app_version: str | None | Unset = UNSET


@dataclass(frozen=True)
class SubscriberData:
    """Changes to a subscriber; `attributes` merges into the stored ones (a None value removes a name)."""

    display_name: str | None | Unset = UNSET
    locale: str | None | Unset = UNSET
    time_zone: str | None | Unset = UNSET
    phone: str | None | Unset = UNSET
    attributes: dict[str, Any] | Unset = UNSET
    opted_out: bool | Unset = UNSET


@dataclass
class KeyMatch:
    """Normalised subscriber keys split into those that exist and those that do not."""

    found: list[str]
    unknown: list[str]


@dataclass
class MembershipReport:
    """Outcome of a bulk membership change."""

    changed: int
    unchanged: int
    unknown: list[str] = field(default_factory=list)


# --- keys and field rules -------------------------------------------------------------------------------


def normalize_key(raw: str, *, field_name: str = "subscriber_key") -> str:
    """A subscriber key stripped and lowercased; refuses empty, too long or control characters."""
    key = raw.strip().lower()
    if not key:
        raise ServiceError("A subscriber key cannot be empty.", field=field_name)
    if len(key) > KEY_MAX_LENGTH:
        raise ServiceError(f"A subscriber key has at most {KEY_MAX_LENGTH} characters.", field=field_name)
    if not re.fullmatch(KEY_PATTERN, key):
        raise ServiceError("A subscriber key cannot contain control characters.", field=field_name)
    return key


def normalize_keys(raw: Iterable[str]) -> list[str]:
    """Keys stripped, lowercased and deduplicated in their first order; blank entries are dropped."""
    seen: dict[str, None] = {}
    for item in raw:
        key = item.strip().lower()
        if key:
            seen.setdefault(key, None)
    return list(seen)


def _check_text(value: Any, field_name: str, max_length: int, pattern: str = TEXT_PATTERN) -> None:
    """Refuse a value that is not a short string matching the field's rule (None and UNSET pass)."""
    if value is None or value is UNSET:
        return
    if not isinstance(value, str) or len(value) > max_length or not re.fullmatch(pattern, value):
        raise ServiceError(f"{field_name} is not valid.", field=field_name)


def check_time_zone(value: str | None | Unset, field_name: str = "time_zone") -> None:
    """Refuse a time zone that is not an IANA name known to this server."""
    if value is not None and value is not UNSET and value not in time_zones():
        raise ServiceError("Use an IANA time zone name such as Europe/Warsaw.", field=field_name)


def normalize_locale(value: str | None | Unset) -> str | None | Unset:
    """BCP 47 style: `en_US` is stored as `en-US`."""
    return value.replace("_", "-") if isinstance(value, str) else value


def _check_attributes(attributes: dict[str, Any] | Unset) -> None:
    """Attribute names are identifiers; values are short scalars."""
    if attributes is UNSET:
        return
    if not isinstance(attributes, dict) or len(attributes) > ATTRIBUTE_MAX_COUNT:
        raise ServiceError(f"attributes must be an object of at most {ATTRIBUTE_MAX_COUNT} names.", field="attributes")
    for name, value in attributes.items():
        if not re.fullmatch(ATTRIBUTE_NAME_PATTERN, name):
            raise ServiceError(f"Attribute name {name!r} is not valid.", field=f"attributes.{name}")
        if isinstance(value, str) and len(value) > ATTRIBUTE_VALUE_MAX_LENGTH:
            raise ServiceError("Attribute values have at most 1000 characters.", field=f"attributes.{name}")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ServiceError("Attribute values are strings, numbers, booleans or null.", field=f"attributes.{name}")


def check_token(token: str) -> None:
    """A provider token: printable ASCII without separators, not starting with a dot."""
    if len(token) > TOKEN_MAX_LENGTH or not re.fullmatch(TOKEN_PATTERN, token):
        raise ServiceError("The device token is not valid.", field="token")


def _check_registration(app: App, token: str, reg: DeviceRegistration) -> None:
    """Every rule of a registration, checked before anything is written."""
    check_token(token)
    if reg.platform is not None and reg.platform not in PLATFORMS:
        raise ServiceError(f"platform must be one of {', '.join(PLATFORMS)}.", field="platform")
    if reg.platform is not None and reg.platform not in (app.platforms or PLATFORMS):
        raise ServiceError(f"The app {app.name} does not ship on {reg.platform}.", field="platform")
    if isinstance(reg.subscriber_key, str):
        normalize_key(reg.subscriber_key)
    _check_text(reg.locale, "locale", LOCALE_MAX_LENGTH, LOCALE_PATTERN)
    check_time_zone(reg.time_zone)
    _check_text(reg.app_version, "app_version", APP_VERSION_MAX_LENGTH)


def _check_subscriber_data(data: SubscriberData) -> None:
    """Every rule of a subscriber change, checked before anything is written."""
    _check_text(data.display_name, "display_name", DISPLAY_NAME_MAX_LENGTH)
    _check_text(data.locale, "locale", LOCALE_MAX_LENGTH, LOCALE_PATTERN)
    _check_text(data.phone, "phone", 16, PHONE_PATTERN)
    check_time_zone(data.time_zone)
    _check_attributes(data.attributes)
    if data.opted_out is not UNSET and not isinstance(data.opted_out, bool):
        raise ServiceError("opted_out is true or false.", field="opted_out")


# --- upserts --------------------------------------------------------------------------------------------


def _dialect_insert(model: type[db.Model] | Table) -> Insert:
    """An INSERT that supports ON CONFLICT on the bound database (PostgreSQL or SQLite)."""
    if db.session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


# unsubscribe_device answers the device as it is now.
_DEVICES: Table = Device.__table__  # type: ignore[assignment]
_DEVICE_COLUMNS = tuple(
    _DEVICES.c[name]
    for name in (
        "token",
        "platform",
        "status",
        "subscriber_id",
        "locale",
        "time_zone",
        "app_version",
        "invalid_reason",
        "invalidated_at",
        "registered_at",
        "created_at",
    )
)

# The registration runs plain SQL on the driver's connection (webadmin/driver_sql.py): no session, no statement
# compilation or cache-key work, no ORM objects. A statement's text is made once per shape (which optional fields
# were sent) and kept. The concurrency guarantees are the INSERT … ON CONFLICT DO NOTHING and the UPDATE after it,
# as before; the short refresh in front of them only ever updates a row that exists (see _upsert_device).
_RETURNING = (
    " RETURNING token, platform, status, subscriber_id, locale, time_zone, app_version, invalid_reason, "
    "invalidated_at, registered_at, created_at"
)
# A key resolves to its subscriber inside the statement (NULL while the key is unknown): a re-registration with
# its key is one statement.
_SUBSCRIBER_OF_KEY = "(SELECT id FROM subscribers WHERE subscriber_key = :v_subscriber_key)"
_REACTIVATE = "status = 'active', invalid_reason = NULL, invalidated_at = NULL, registered_at = :v_registered_at"
_INSERT_SUBSCRIBER = (
    "INSERT INTO subscribers (subscriber_key, attributes, opted_out, created_at, updated_at) "
    "VALUES (:key, '{}', :opted_out, :now, :now) ON CONFLICT (subscriber_key) DO NOTHING RETURNING id"
)
_FIND_SUBSCRIBER = "SELECT id FROM subscribers WHERE subscriber_key = :key"
_KEY_OF_SUBSCRIBER = "SELECT subscriber_key FROM subscribers WHERE id = :id"


def _value_sql(column: str) -> str:
    """The SQL expression a sent field's column gets."""
    return _SUBSCRIBER_OF_KEY if column == "subscriber_key" else f":v_{column}"


def _column_name(column: str) -> str:
    """The devices column a field sets (a subscriber key sets subscriber_id)."""
    return "subscriber_id" if column == "subscriber_key" else column


@functools.cache
def _refresh_device_sql(columns: tuple[str, ...], with_platform: bool) -> str:
    """UPDATE an active device that stays as it is (same subscriber, same platform): only unindexed columns.

    The usual registration is an app start re-sending what it sent before. Setting status or subscriber_id, even to
    the values they have, makes SQLite rewrite the entries of every index holding them (three of the four indexes on
    devices): in a micro-benchmark such an UPDATE cost 2-4x this one, which leaves the indexes alone. Whatever else a
    registration changes (a reactivation, another subscriber, a new subscriber key) misses here and goes on to the
    full statements below.
    """
    sets = "".join(f", {c} = :v_{c}" for c in columns if c not in ("subscriber_key", "subscriber_id"))
    match = "app_id = :m_app_id AND token = :m_token" + (" AND platform = :m_platform" if with_platform else "")
    match += " AND status = 'active' AND invalid_reason IS NULL AND invalidated_at IS NULL"
    if "subscriber_key" in columns:
        match += f" AND subscriber_id = {_SUBSCRIBER_OF_KEY}"  # an unknown key (NULL) never matches
    elif "subscriber_id" in columns:  # sent as null: the device belongs to no one
        match += " AND subscriber_id IS NULL"
    return f"UPDATE devices SET registered_at = :v_registered_at{sets} WHERE {match}{_RETURNING}"


@functools.cache
def _update_device_sql(columns: tuple[str, ...], with_platform: bool) -> str:
    """UPDATE one device of an app (optionally only if its platform matches): reactivate it, set the sent fields."""
    sets = "".join(f", {_column_name(c)} = {_value_sql(c)}" for c in columns)
    match = "app_id = :m_app_id AND token = :m_token" + (" AND platform = :m_platform" if with_platform else "")
    return f"UPDATE devices SET {_REACTIVATE}{sets} WHERE {match}{_RETURNING}"


@functools.cache
def _insert_device_sql(columns: tuple[str, ...]) -> str:
    """INSERT an active device unless the app already has the token."""
    names = "".join(f", {_column_name(c)}" for c in columns)
    values = "".join(f", {_value_sql(c)}" for c in columns)
    return (
        "INSERT INTO devices (app_id, token, platform, status, registered_at, created_at"
        f"{names}) VALUES (:m_app_id, :m_token, :m_platform, 'active', :v_registered_at, :v_registered_at"
        f"{values}) ON CONFLICT (app_id, token) DO NOTHING{_RETURNING}"
    )


_ATTACH_SUBSCRIBER = _update_device_sql(("subscriber_id",), False)


def _create_subscriber(tx: driver_sql.Transaction, key: str, now: Any) -> int:
    """Create the subscriber of a key seen for the first time; its id (also when a concurrent call made it)."""
    params = {"key": key, "now": now, "opted_out": False}
    created = tx.execute(_INSERT_SUBSCRIBER, params).fetchone()
    if created is not None:
        return created[0]
    return tx.execute(_FIND_SUBSCRIBER, {"key": key}).fetchone()[0]  # lost a race


def _device_dict(row: Any, subscriber_key: str | None) -> dict[str, Any]:
    """A device as the API shows it (from a Core row)."""
    return {
        "token": row.token,
        "platform": row.platform,
        "status": row.status,
        "subscriberKey": subscriber_key,
        "locale": row.locale,
        "timeZone": row.time_zone,
        "appVersion": row.app_version,
        "invalidReason": row.invalid_reason,
        "invalidatedAt": row.invalidated_at.isoformat() if row.invalidated_at else None,
        "registeredAt": row.registered_at.isoformat(),
        "createdAt": row.created_at.isoformat(),
    }


def _registered_dict(row: tuple[Any, ...], subscriber_key: str | None, now: datetime) -> dict[str, Any]:
    """A device row RETURNed by a registration as the API shows it (registered now, so never invalid)."""
    token, platform, status, _subscriber_id, locale, time_zone, app_version, _reason, _invalidated, _at, created = row
    return {
        "token": token,
        "platform": platform,
        "status": status,
        "subscriberKey": subscriber_key,
        "locale": locale,
        "timeZone": time_zone,
        "appVersion": app_version,
        "invalidReason": None,
        "invalidatedAt": None,
        "registeredAt": now.isoformat(),
        "createdAt": driver_sql.time_value(created).isoformat(),
    }


def _registration_params(reg: DeviceRegistration, key: str | None | Unset, now: Any) -> dict[str, Any]:
    """Parameters of a (re-)registration: its time, and the optional fields that were sent."""
    params: dict[str, Any] = {"v_registered_at": now}
    optional = {
        # A key resolves to its subscriber in the statement; None detaches the device.
        "subscriber_key" if isinstance(key, str) else "subscriber_id": key,
        "locale": normalize_locale(reg.locale),
        "time_zone": reg.time_zone,
        "app_version": reg.app_version,
    }
    params.update({f"v_{name}": value for name, value in optional.items() if value is not UNSET})
    return params


def _upsert_device(
    tx: driver_sql.Transaction, app: App, token: str, reg: DeviceRegistration, params: dict[str, Any]
) -> Any:
    """Refresh, else insert, else update: (row, created); (None, False) when refused.

    A re-registration that changes nothing but its time and app details is the one cheap statement of
    _refresh_device_sql. Otherwise ON CONFLICT DO NOTHING makes concurrent first registrations of one token leave
    a single row, and the UPDATE after it (which sees the row a concurrent call committed) reactivates the device,
    moves it to its new subscriber, or matches nothing when the token is stored with another platform. Only those
    rarer calls try the INSERT on an existing token (on PostgreSQL each such try uses up a sequence value).
    """
    columns = tuple(name[2:] for name in params if name != "v_registered_at")
    with_platform = reg.platform is not None
    params.update(m_app_id=app.id, m_token=token, m_platform=reg.platform)
    row = tx.execute(_refresh_device_sql(columns, with_platform), params).fetchone()
    if row is not None:
        return row, False
    update_sql = _update_device_sql(columns, with_platform)
    if not with_platform:  # a new token needs its platform: only an existing device can be updated
        return tx.execute(update_sql, params).fetchone(), False
    row = tx.execute(_insert_device_sql(columns), params).fetchone()
    if row is not None:
        return row, True
    return tx.execute(update_sql, params).fetchone(), False


def _registration_refused(tx: driver_sql.Transaction, app: App, token: str, reg: DeviceRegistration) -> ServiceError:
    """Why no row was written: a new token without platform, or a token stored with another platform."""
    tx.rollback()
    if reg.platform is None:
        return ServiceError("platform is required to register a new device.", field="platform")
    stored = db.session.scalar(select(Device.platform).where(Device.app_id == app.id, Device.token == token))
    return ServiceError(f"This token is registered for {stored}.", field="platform", code="conflict")


def _attach_new_subscriber(tx: driver_sql.Transaction, app: App, token: str, key: str, now: Any) -> Any:
    """The key was unknown (subscriber_id came out NULL): create its subscriber and attach the device."""
    params = {"v_registered_at": now, "v_subscriber_id": _create_subscriber(tx, key, now), "m_app_id": app.id,
              "m_token": token}
    return tx.execute(_ATTACH_SUBSCRIBER, params).fetchone()


def _register_once(tx: driver_sql.Transaction, app: App, token: str, reg: DeviceRegistration) -> Any:
    """One attempt at a registration: usually a single device statement (plus the commit)."""
    now = utcnow()
    stored_now = tx.time_param(now)
    key = normalize_key(reg.subscriber_key) if isinstance(reg.subscriber_key, str) else reg.subscriber_key
    row, created = _upsert_device(tx, app, token, reg, _registration_params(reg, key, stored_now))
    if row is None:
        raise _registration_refused(tx, app, token, reg)
    if isinstance(key, str) and row[3] is None:
        row = _attach_new_subscriber(tx, app, token, key, stored_now)
    elif key is UNSET and row[3] is not None:
        key = tx.execute(_KEY_OF_SUBSCRIBER, {"id": row[3]}).fetchone()[0]
    tx.commit()
    return _registered_dict(row, None if key is UNSET else key, now), created


def register_device(app: App, token: str, reg: DeviceRegistration) -> tuple[dict[str, Any], bool]:
    """Register or refresh a device token (idempotent); returns (device as dict, whether it was created)."""
    _check_registration(app, token, reg)
    tx = driver_sql.Transaction()
    try:
        return _register_once(tx, app, token, reg)
    except driver_sql.integrity_error():
        # A subscriber created here was deleted (console) before the device pointed at it: run it again.
        tx.rollback()
        return _register_once(driver_sql.Transaction(), app, token, reg)


def unsubscribe_device(app: App, token: str) -> dict[str, Any] | None:
    """Mark a device unsubscribed; None when this app has no such token (forbidden if another app has it)."""
    stmt = (
        update(Device)
        .where(Device.app_id == app.id, Device.token == token)
        .values(status="unsubscribed")
        .returning(*_DEVICE_COLUMNS)
    )
    row = db.session.execute(stmt).first()
    if row is None:
        db.session.rollback()
        if db.session.scalar(select(exists().where(Device.token == token))):
            raise ServiceError("This token belongs to another app.", field="token", code="forbidden")
        return None
    key = db.session.scalar(select(Subscriber.subscriber_key).where(Subscriber.id == row.subscriber_id))
    db.session.commit()
    return _device_dict(row, key)


def _lock_subscriber(key: str, now: datetime) -> bool:
    """Make sure the subscriber row exists and hold its write lock; True when it was just created."""
    touch = update(Subscriber).where(Subscriber.subscriber_key == key).values(updated_at=now)
    if db.session.execute(touch).rowcount:
        return False
    stmt = (
        _dialect_insert(Subscriber)
        .values(subscriber_key=key, attributes={}, opted_out=False, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["subscriber_key"])
        .returning(Subscriber.id)
    )
    if db.session.scalar(stmt) is not None:
        return True
    db.session.execute(touch)  # created concurrently: lock it like an existing one
    return False


def _apply_subscriber_data(subscriber: Subscriber, data: SubscriberData) -> None:
    """Copy the sent fields onto the subscriber (attributes merge; a None value removes the name)."""
    for name in ("display_name", "time_zone", "phone", "opted_out"):
        value = getattr(data, name)
        if value is not UNSET:
            setattr(subscriber, name, value)
    if data.locale is not UNSET:
        subscriber.locale = normalize_locale(data.locale)  # type: ignore[assignment]
    if isinstance(data.attributes, dict):
        merged = {**(subscriber.attributes or {}), **data.attributes}
        subscriber.attributes = {name: value for name, value in merged.items() if value is not None}


def upsert_subscriber(key: str, data: SubscriberData) -> tuple[Subscriber, bool]:
    """Create or update the subscriber with this key; returns (subscriber, whether it was created)."""
    key = normalize_key(key)
    _check_subscriber_data(data)
    now = utcnow()
    created = _lock_subscriber(key, now)
    stmt = select(Subscriber).where(Subscriber.subscriber_key == key).execution_options(populate_existing=True)
    subscriber = db.session.scalars(stmt).one()
    _apply_subscriber_data(subscriber, data)
    subscriber.updated_at = now
    db.session.commit()
    return subscriber, created


# --- group membership -----------------------------------------------------------------------------------


def find_group(group_id: int) -> Group | None:
    """The group with this id, if any (ids beyond the integer column's range never exist)."""
    if not 0 < group_id <= 2**31 - 1:
        return None
    return db.session.get(Group, group_id)


def _chunks(keys: list[str]) -> Iterator[list[str]]:
    """Slices of at most KEY_CHUNK keys."""
    for start in range(0, len(keys), KEY_CHUNK):
        yield keys[start : start + KEY_CHUNK]


def match_keys(keys: list[str]) -> KeyMatch:
    """Which of these keys (normalised first) belong to existing subscribers, in the given order."""
    keys = normalize_keys(keys)
    existing: set[str] = set()
    for chunk in _chunks(keys):
        existing.update(
            db.session.scalars(select(Subscriber.subscriber_key).where(Subscriber.subscriber_key.in_(chunk)))
        )
    return KeyMatch(found=[k for k in keys if k in existing], unknown=[k for k in keys if k not in existing])


def _actor_label(actor: User | str | None) -> User | str | None:
    """Audit actors are users or short labels such as `api:wa_1a2b3c4d`."""
    return actor if isinstance(actor, User) or actor is None else actor[:254]


def add_group_members(group: Group, keys: list[str], *, actor: User | str | None) -> MembershipReport:
    """Add subscribers to a group by key, set-based (INSERT … SELECT), skipping existing members; commits."""
    match = match_keys(keys)
    added = 0
    now = utcnow()
    for chunk in _chunks(match.found):
        source = select(literal(group.id), Subscriber.id, literal(now, type_=GroupMember.added_at.type)).where(
            Subscriber.subscriber_key.in_(chunk)
        )
        stmt = _dialect_insert(GroupMember).from_select(["group_id", "subscriber_id", "added_at"], source)
        # RETURNING counts the inserted rows on both databases (psycopg reports no rowcount here).
        added += len(db.session.execute(stmt.on_conflict_do_nothing().returning(GroupMember.subscriber_id)).all())
    report = MembershipReport(changed=added, unchanged=len(match.found) - added, unknown=match.unknown)
    audit.record(
        "group.members_add",
        actor=_actor_label(actor),
        obj=("group", group.id),
        added=report.changed,
        already=report.unchanged,
        unknown=len(report.unknown),
    )
    db.session.commit()
    return report


def remove_group_members(group: Group, keys: list[str], *, actor: User | str | None) -> MembershipReport:
    """Remove subscribers from a group by key, set-based; commits."""
    match = match_keys(keys)
    removed = 0
    for chunk in _chunks(match.found):
        ids = select(Subscriber.id).where(Subscriber.subscriber_key.in_(chunk))
        stmt = delete(GroupMember).where(GroupMember.group_id == group.id, GroupMember.subscriber_id.in_(ids))
        removed += db.session.execute(stmt).rowcount
    report = MembershipReport(changed=removed, unchanged=len(match.found) - removed, unknown=match.unknown)
    audit.record(
        "group.members_remove",
        actor=_actor_label(actor),
        obj=("group", group.id),
        removed=report.changed,
        not_member=report.unchanged,
        unknown=len(report.unknown),
    )
    db.session.commit()
    return report
