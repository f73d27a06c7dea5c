"""Plain `make_*` factories for tests."""

from __future__ import annotations

import functools
import itertools

from sqlalchemy import select
from werkzeug.security import generate_password_hash

from webadmin.extensions import db
from webadmin.models.user import Role, User

PASSWORD = "correct horse battery staple"
_counter = itertools.count(1)


@functools.cache
def _password_hash() -> str:
    """Hash the shared test password once; scrypt is slow on purpose."""
    return generate_password_hash(PASSWORD, method="scrypt")


def make_user(role: Role | str = Role.MARKETER, email: str | None = None, active: bool = True) -> User:
    """A staff account whose password is PASSWORD."""
    user = User(
        email=email or f"user{next(_counter)}@example.com",
        role=Role(role).value,
        active=active,
        password_hash=_password_hash(),
    )
    db.session.add(user)
    db.session.commit()
    return user


def make_app(name: str | None = None, scheme: str = "nibs"):
    """An app."""
    from webadmin.models.app import App

    app = App(name=name or f"App {next(_counter)}", deep_link_scheme=scheme, platforms=["android", "ios", "web"])
    db.session.add(app)
    db.session.commit()
    return app


def make_subscriber(key: str | None = None, **fields):
    """A subscriber."""
    from webadmin.models.audience import Subscriber

    subscriber = Subscriber(subscriber_key=key or f"s{next(_counter)}@example.com", **fields)
    db.session.add(subscriber)
    db.session.commit()
    return subscriber


def make_device(app, subscriber=None, platform: str = "android", token: str | None = None, **fields):
    """A device of an app, optionally belonging to a subscriber."""
    from webadmin.models.audience import Device

    device = Device(
        app_id=app.id,
        subscriber_id=subscriber.id if subscriber else None,
        platform=platform,
        token=token or f"tok-{next(_counter)}",
        **fields,
    )
    db.session.add(device)
    db.session.commit()
    return device


def make_group(name: str | None = None, subscribers=()):
    """A group with members."""
    from webadmin.models.audience import Group, GroupMember

    group = Group(name=name or f"Group {next(_counter)}")
    db.session.add(group)
    db.session.flush()
    db.session.add_all(GroupMember(group_id=group.id, subscriber_id=s.id) for s in subscribers)
    db.session.commit()
    return group


def everything_stored() -> str:
    """Every row of every table as text, to prove a value is stored nowhere."""
    db.session.expire_all()
    parts = []
    for table in db.metadata.sorted_tables:
        parts.extend(repr(tuple(row)) for row in db.session.execute(select(table)))
    return "\n".join(parts)


def make_due_retry(campaign_id: int, message_id: int | None = None) -> None:
    """One message of a campaign (or all of them) failed once and its retry is due now; the counter follows."""
    from datetime import timedelta

    from sqlalchemy import update

    from webadmin.models.campaign import Campaign
    from webadmin.models.message import Message
    from webadmin.models.types import utcnow

    rows = update(Message).where(Message.campaign_id == campaign_id)
    if message_id is not None:
        rows = rows.where(Message.id == message_id)
    changed = db.session.execute(rows.values(state="ERROR_RETRY", number_of_send_attempts=1,
                                             next_attempt_at=utcnow() - timedelta(seconds=1))).rowcount
    db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(retrying=changed))
    db.session.commit()
