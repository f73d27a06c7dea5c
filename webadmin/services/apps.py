"""Apps that receive pushes and their API keys: create, change, issue and revoke keys."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select

from webadmin.extensions import db
from webadmin.models.app import PLATFORMS, ApiKey, App, hash_api_key
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.services import ServiceError, audit
from webadmin.services.deep_links import normalize_web_link_base

SCHEME_PATTERN = re.compile(r"^[a-z][a-z0-9+.-]{0,39}$")
# Schemes a push must never open through a deep link: the web, script and local-file ones.
FORBIDDEN_SCHEMES = frozenset({"http", "https", "javascript", "data", "file", "vbscript"})
SCHEME_RULE = "Use a scheme such as nibs: a lowercase letter, then up to 39 letters, digits, +, . or -."


@dataclass(frozen=True)
class AppRow:
    """An app in the Settings list, with how many of its keys are active."""

    app: App
    active_keys: int


def normalize_scheme(scheme: str | None) -> str | None:
    """The scheme without `://`, lowercased; None when blank. Refuses malformed and dangerous schemes."""
    value = (scheme or "").strip().lower().removesuffix("://").removesuffix(":")
    if not value:
        return None
    if not SCHEME_PATTERN.fullmatch(value):
        raise ServiceError(SCHEME_RULE, field="deep_link_scheme")
    if value in FORBIDDEN_SCHEMES:
        raise ServiceError(
            f"{value}:// cannot be a deep-link scheme: it opens web pages, scripts or files, not your app.",
            field="deep_link_scheme",
        )
    return value


def normalize_platforms(platforms: Iterable[str]) -> list[str]:
    """The platforms in canonical order; at least one, each one of android, ios, web."""
    chosen = set(platforms)
    unknown = chosen - set(PLATFORMS)
    if unknown:
        raise ServiceError(f"Unknown platform: {', '.join(sorted(unknown))}.", field="platforms")
    if not chosen:
        raise ServiceError("Choose at least one platform.", field="platforms")
    return [p for p in PLATFORMS if p in chosen]


def _normalize_name(name: str, *, current: App | None = None) -> str:
    """A trimmed, non-empty app name that no other app uses."""
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise ServiceError("Give the app a name of at most 120 characters.", field="name")
    query = select(App.id).where(func.lower(App.name) == name.lower())
    if current is not None:
        query = query.where(App.id != current.id)
    if db.session.scalar(query) is not None:
        raise ServiceError("Another app already has this name.", field="name", code="conflict")
    return name


def list_apps() -> list[AppRow]:
    """Every app by name, with its count of active API keys."""
    active = func.count(ApiKey.id).filter(ApiKey.revoked_at.is_(None))
    rows = db.session.execute(
        select(App, active).outerjoin(ApiKey, ApiKey.app_id == App.id).group_by(App.id).order_by(App.name)
    ).all()
    return [AppRow(app=app, active_keys=count) for app, count in rows]


def get_app(app_id: int) -> App | None:
    """The app with this id, if any."""
    return db.session.get(App, app_id)


def create_app(name: str, platforms: Sequence[str], scheme: str | None, *, actor: User | str | None,
               web_link_base: str | None = None) -> App:
    """Add an app (validated, audited, committed)."""
    app = App(
        name=_normalize_name(name),
        platforms=normalize_platforms(platforms),
        deep_link_scheme=normalize_scheme(scheme),
        web_link_base=normalize_web_link_base(web_link_base),
    )
    db.session.add(app)
    db.session.flush()
    audit.record(
        "app.create", actor=actor, obj=("app", app.id), name=app.name, platforms=app.platforms,
        scheme=app.deep_link_scheme, web_link_base=app.web_link_base,
    )
    db.session.commit()
    return app


def update_app(
    app: App, name: str, platforms: Sequence[str], scheme: str | None, *, actor: User | str | None,
    web_link_base: str | None = None,
) -> None:
    """Change an app's name, platforms, scheme or web address (None clears it); the audit row lists what changed."""
    new = {
        "name": _normalize_name(name, current=app),
        "platforms": normalize_platforms(platforms),
        "deep_link_scheme": normalize_scheme(scheme),
        "web_link_base": normalize_web_link_base(web_link_base),
    }
    changes = {field: [getattr(app, field), value] for field, value in new.items() if getattr(app, field) != value}
    if not changes:
        return
    for field, (_, value) in changes.items():
        setattr(app, field, value)
    audit.record("app.update", actor=actor, obj=("app", app.id), **changes)
    db.session.commit()


def api_keys_of(app: App) -> list[ApiKey]:
    """An app's keys, newest first (revoked ones too, marked by `revoked_at`)."""
    query = select(ApiKey).where(ApiKey.app_id == app.id).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    return list(db.session.scalars(query))


def get_api_key(app: App, key_id: int) -> ApiKey | None:
    """One of the app's keys by id."""
    key = db.session.get(ApiKey, key_id)
    return key if key is not None and key.app_id == app.id else None


def _unused_prefix_and_secret() -> tuple[str, str]:
    """A fresh (prefix, secret) whose prefix no stored key has (8 hex digits rarely collide; retry if so)."""
    for _ in range(5):
        prefix, secret = ApiKey.generate()
        if db.session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            return prefix, secret
    raise ServiceError("Could not find an unused key prefix; try again.", code="conflict")


def create_api_key(app: App, name: str, *, actor: User | str | None) -> tuple[ApiKey, str]:
    """Issue a key; returns it with the full secret, which is never stored and must be shown only once."""
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise ServiceError("Give the key a name of at most 120 characters (e.g. “iOS app production”).", field="name")
    prefix, secret = _unused_prefix_and_secret()
    key = ApiKey(
        app_id=app.id,
        name=name,
        prefix=prefix,
        key_hash=hash_api_key(secret),
        created_by=actor.email if isinstance(actor, User) else actor,
    )
    db.session.add(key)
    db.session.flush()
    # Only the prefix goes to the audit log: it identifies the key without granting anything.
    audit.record("api_key.create", actor=actor, obj=("api_key", key.id), app_id=app.id, name=name, prefix=prefix)
    db.session.commit()
    return key, secret


def revoke_api_key(key: ApiKey, *, actor: User | str | None) -> bool:
    """Revoke a key at once; False when it was already revoked (nothing changes then)."""
    if key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    audit.record(
        "api_key.revoke", actor=actor, obj=("api_key", key.id), app_id=key.app_id, name=key.name, prefix=key.prefix
    )
    db.session.commit()
    return True
