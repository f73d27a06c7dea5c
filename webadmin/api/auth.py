"""API-key authentication: `Authorization: Bearer wa_<prefix>.<secret>`, checked before every API-key route."""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Any

from flask import current_app, g, request
from sqlalchemy import Row, Table, bindparam, or_, select, update
from sqlalchemy.orm import make_transient_to_detached

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


# One Core query per request (no ORM loading): the key's state and the app's columns.
_KEYS: Table = ApiKey.__table__  # type: ignore[assignment]
_APPS: Table = App.__table__  # type: ignore[assignment]
_FIND_KEY = (
    select(
        _KEYS.c.id,
        _KEYS.c.prefix,
        _KEYS.c.key_hash,
        _KEYS.c.revoked_at,
        _KEYS.c.last_used_at,
        _APPS.c.id.label("app_id"),
        _APPS.c.name,
        _APPS.c.platforms,
        _APPS.c.deep_link_scheme,
        _APPS.c.created_at,
    )
    .join(_APPS, _APPS.c.id == _KEYS.c.app_id)
    .where(_KEYS.c.prefix == bindparam("prefix"))
)


def _find_key(key: str) -> Row[Any]:
    """The active key matching the presented one (looked up by prefix, compared in constant time)."""
    prefix, dot, _ = key.partition(".")
    if not dot or not prefix.startswith(API_KEY_PREFIX) or len(prefix) > 16 or len(key) > MAX_KEY_LENGTH:
        raise ApiError(401, "The API key is not valid.")
    row = db.session.connection().execute(_FIND_KEY, {"prefix": prefix}).first()
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


def _app_from_row(row: Row[Any]) -> App:
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


def _record_use(api_key: Row[Any]) -> None:
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
