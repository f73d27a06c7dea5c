"""Plain `make_*` factories for the API tests: apps with keys, subscribers, groups, devices."""

from __future__ import annotations

import itertools
from datetime import datetime

from webadmin.extensions import db
from webadmin.models.app import PLATFORMS, ApiKey, App, hash_api_key
from webadmin.models.audience import Device, Group, GroupMember, Subscriber

_counter = itertools.count(1)


def make_app(name: str | None = None, platforms: tuple[str, ...] = PLATFORMS) -> App:
    """An app that ships on the given platforms."""
    app = App(name=name or f"App {next(_counter)}", platforms=list(platforms), deep_link_scheme="nibs")
    db.session.add(app)
    db.session.commit()
    return app


def make_api_key(app: App, *, revoked_at: datetime | None = None) -> tuple[ApiKey, str]:
    """A key for the app: (row, the full secret a client presents)."""
    prefix, secret = ApiKey.generate()
    key = ApiKey(app_id=app.id, name="test", prefix=prefix, key_hash=hash_api_key(secret), revoked_at=revoked_at)
    db.session.add(key)
    db.session.commit()
    return key, secret


def make_subscriber(key: str | None = None, **fields) -> Subscriber:
    """A subscriber with a (lowercase) key."""
    subscriber = Subscriber(subscriber_key=key or f"s{next(_counter)}@example.com", attributes={}, **fields)
    db.session.add(subscriber)
    db.session.commit()
    return subscriber


def make_group(name: str | None = None, members: list[Subscriber] = ()) -> Group:
    """A group, optionally with members."""
    group = Group(name=name or f"Group {next(_counter)}")
    db.session.add(group)
    db.session.flush()
    db.session.add_all(GroupMember(group_id=group.id, subscriber_id=s.id) for s in members)
    db.session.commit()
    return group


def make_device(app: App, token: str, platform: str = "android", **fields) -> Device:
    """A device row written directly (for states the API does not create, such as invalid)."""
    device = Device(app_id=app.id, token=token, platform=platform, **fields)
    db.session.add(device)
    db.session.commit()
    return device
