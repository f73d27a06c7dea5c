"""API-key authentication: `Authorization: Bearer wa_<prefix>.<secret>`, checked before every API-key route."""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from flask import current_app, g, request
from sqlalchemy import or_, update
from sqlalchemy.orm import make_transient_to_detached

from webadmin import driver_sql
from webadmin.access import access_of
from webadmin.api.validation import ApiError
from webadmin.extensions import db
from webadmin.models.app import API_KEY_PREFIX, ApiKey, App, hash_api_key
from webadmin.models.types import utcnow

# Recording every use would add a write to every request; a minute is precise enough for "last used".
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_KEY_LENGTH = 200


def _presented_key() -> str:
    """The key from the Authorization header, or a 401."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(401, "Send an API key as `Authorization: Bearer <key>`.")
    return key


class KeyRow(NamedTuple):
    """The presented key's row and its app's columns (one read per request, so a revocation counts at once)."""

    id: int
    prefix: str
    key_hash: str
    revoked_at: datetime | None
    last_used_at: datetime | None
    app_id: int
    name: str
    platforms: list[str] | None
    deep_link_scheme: str | None
    created_at: datetime


# One statement per request on the driver's connection (webadmin/driver_sql.py): through the session and Core's
# execution layer the lookup cost ~4x more than the query itself.
_FIND_KEY = (
    "SELECT k.id, k.prefix, k.key_hash, k.revoked_at, k.last_used_at, a.id, a.name, a.platforms, "
    "a.deep_link_scheme, a.created_at FROM api_keys k JOIN apps a ON a.id = k.app_id WHERE k.prefix = :prefix"
)


def _read_key(prefix: str) -> KeyRow | None:
    """The key row with this prefix, its values converted as the ORM would."""
    tx = driver_sql.Transaction()
    found = tx.execute(_FIND_KEY, {"prefix": prefix}).fetchone()
    # On PostgreSQL this read opened a transaction on the request's driver connection; it is left open (a plain
    # read, READ COMMITTED: no row locks, no snapshot held between statements) for the route's own driver
    # statements, which commit it (events, registrations), or for the end of the request, which rolls it back: a
    # ROLLBACK here was one round trip of the five an event report made. SQLite's read ended with the statement.
    if found is None:
        return None
    key_id, key_prefix, key_hash, revoked_at, last_used_at, app_id, name, platforms, scheme, created_at = found
    return KeyRow(
        key_id,
        key_prefix,
        key_hash,
        driver_sql.time_value(revoked_at),
        driver_sql.time_value(last_used_at),
        app_id,
        name,
        tx.json_value(platforms),
        scheme,
        driver_sql.time_value(created_at),
    )


def _find_key(key: str) -> KeyRow:
    """The active key matching the presented one (looked up by prefix, compared in constant time)."""
    prefix, dot, _ = key.partition(".")
    if not dot or not prefix.startswith(API_KEY_PREFIX) or len(prefix) > 16 or len(key) > MAX_KEY_LENGTH:
        raise ApiError(401, "The API key is not valid.")
    row = _read_key(prefix)
    # The same comparison as ApiKey.matches(), on the row instead of a loaded object.
    if row is None or not hmac.compare_digest(row.key_hash, hash_api_key(key)):
        raise ApiError(401, "The API key is not valid.")
    if row.revoked_at is not None:
        raise ApiError(401, "The API key has been revoked.")
    return row


# One App object per distinct state of an app's row, shared by the requests of this process: building an ORM object
# and adding it to the session each time was ~80 µs of a ~900 µs device registration. It is read-only and never in a
# session (API services read its columns and take its id); a changed row (say, new platforms) makes a new object.
_APP_OBJECTS: dict[tuple[Any, ...], App] = {}
_APP_OBJECTS_MAX = 256


def _app_from_row(row: KeyRow) -> App:
    """The key's App, built from the row without a query (detached, as if loaded: it is never INSERTed)."""
    state = (row.app_id, row.name, tuple(row.platforms or ()), row.deep_link_scheme, row.created_at)
    app = _APP_OBJECTS.get(state)
    if app is None:
        app = App(id=row.app_id, name=row.name, platforms=row.platforms, deep_link_scheme=row.deep_link_scheme,
                  created_at=row.created_at)
        make_transient_to_detached(app)
        if len(_APP_OBJECTS) >= _APP_OBJECTS_MAX:  # renamed apps leave old states behind
            _APP_OBJECTS.clear()
        _APP_OBJECTS[state] = app
    return app


def _record_use(api_key: KeyRow) -> None:
    """Update last_used_at at most once a minute per key (its own small transaction)."""
    now = utcnow()
    if api_key.last_used_at is not None and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    cutoff = now - LAST_USED_RESOLUTION
    db.session.execute(
        update(ApiKey)
        .where(ApiKey.id == api_key.id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < cutoff))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def authenticate() -> Any:
    """before_request for the API blueprint: routes declared @api_key need a valid, unrevoked key."""
    access = access_of(current_app, request.endpoint)
    if access is None or access.kind != "api":
        return None
    api_key = _find_key(_presented_key())
    _record_use(api_key)
    g.api_app = _app_from_row(api_key)
    g.api_actor = f"api:{api_key.prefix}"
    return None


def current_api_app() -> App:
    """The app whose key authenticated this request."""
    return g.api_app


def current_api_actor() -> str:
    """The audit actor for this request: `api:<key prefix>`."""
    return g.api_actor
