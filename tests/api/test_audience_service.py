"""webadmin.services.audience used directly (as the console does): keys, matching, membership, upserts."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select

from tests.api.factories import make_app, make_group, make_subscriber
from tests.factories import make_user
from webadmin.extensions import db
from webadmin.models.audience import Device, GroupMember, Subscriber
from webadmin.models.audit import AuditEvent
from webadmin.models.types import utcnow
from webadmin.models.user import Role
from webadmin.services import ServiceError, audience


def _bulk_subscribers(keys: list[str]) -> None:
    """Insert many subscribers in one statement."""
    now = utcnow()
    rows = [
        {"subscriber_key": k, "attributes": {}, "opted_out": False, "created_at": now, "updated_at": now} for k in keys
    ]
    db.session.execute(insert(Subscriber), rows)
    db.session.commit()


def test_normalize_keys_strips_lowercases_dedupes_in_order():
    raw = [" B@x.io", "a@x.io", "b@x.io ", "", "   ", "A@X.IO", "c@x.io"]
    assert audience.normalize_keys(raw) == ["b@x.io", "a@x.io", "c@x.io"]


@pytest.mark.parametrize("raw", ["", "  ", "x" * 255, "a\x00b", "a\nb"])
def test_normalize_key_refuses(raw):
    with pytest.raises(ServiceError):
        audience.normalize_key(raw)


def test_match_keys_in_chunks(app):
    keys = [f"user{i}@example.com" for i in range(2500)]
    _bulk_subscribers(keys[::2])
    match = audience.match_keys([k.upper() for k in keys] + ["USER0@example.com"])
    assert match.found == keys[::2]
    assert match.unknown == keys[1::2]


def test_membership_changes_over_several_chunks(app):
    keys = [f"user{i}@example.com" for i in range(2300)]
    _bulk_subscribers(keys)
    group = make_group()
    admin = make_user(Role.ADMIN)
    first = audience.add_group_members(group, keys[:1200], actor=admin)
    assert (first.changed, first.unchanged, first.unknown) == (1200, 0, [])
    second = audience.add_group_members(group, keys + ["ghost@example.com"], actor=admin)
    assert (second.changed, second.unchanged, second.unknown) == (1100, 1200, ["ghost@example.com"])
    removed = audience.remove_group_members(group, keys[1000:], actor=admin)
    assert (removed.changed, removed.unchanged) == (1300, 0)
    count = db.session.scalar(select(func.count()).select_from(GroupMember).where(GroupMember.group_id == group.id))
    assert count == 1000
    actors = db.session.scalars(select(AuditEvent.actor).where(AuditEvent.action.like("group.members_%"))).all()
    assert actors == [admin.email] * 3


def test_upsert_subscriber_returns_created_flag(app):
    subscriber, created = audience.upsert_subscriber(" New@Example.com", audience.SubscriberData(display_name="N"))
    assert created and subscriber.subscriber_key == "new@example.com"
    again, created = audience.upsert_subscriber("new@example.com", audience.SubscriberData(opted_out=True))
    assert not created and again.id == subscriber.id and again.opted_out and again.display_name == "N"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (audience.SubscriberData(time_zone="Nowhere"), "time_zone"),
        (audience.SubscriberData(phone="12345"), "phone"),
        (audience.SubscriberData(attributes={"bad name": 1}), "attributes.bad name"),
        (audience.SubscriberData(opted_out="yes"), "opted_out"),  # type: ignore[arg-type]
    ],
)
def test_upsert_subscriber_validates_before_writing(app, data, field):
    with pytest.raises(ServiceError) as caught:
        audience.upsert_subscriber("x@example.com", data)
    assert caught.value.field == field
    assert db.session.scalar(select(func.count(Subscriber.id))) == 0


def test_register_device_service(app):
    push_app = make_app()
    make_subscriber("a@example.com")
    reg = audience.DeviceRegistration(platform="ios", subscriber_key="A@example.com", time_zone="UTC")
    device, created = audience.register_device(push_app, "tok", reg)
    assert created and device["subscriberKey"] == "a@example.com" and device["timeZone"] == "UTC"
    device, created = audience.register_device(push_app, "tok", audience.DeviceRegistration())
    assert not created and device["subscriberKey"] == "a@example.com"
    assert audience.unsubscribe_device(push_app, "tok")["status"] == "unsubscribed"
    assert audience.unsubscribe_device(push_app, "other") is None


def test_register_device_inside_an_open_session_transaction(app):
    """A caller with unflushed/uncommitted work (the Simulator registers from a console request) gets one
    transaction: its pending subscriber is visible to the registration and both are committed together."""
    push_app = make_app()
    db.session.add(Subscriber(subscriber_key="pending@example.com"))
    db.session.flush()  # written in the session's transaction, not committed
    reg = audience.DeviceRegistration(platform="ios", subscriber_key="pending@example.com")
    device, created = audience.register_device(push_app, "tok", reg)
    assert created and device["subscriberKey"] == "pending@example.com"
    db.session.rollback()  # nothing left to roll back: the registration committed the caller's work too
    subscriber = db.session.scalars(select(Subscriber).where(Subscriber.subscriber_key == "pending@example.com")).one()
    assert db.session.scalars(select(Device.subscriber_id).where(Device.token == "tok")).one() == subscriber.id
    assert db.session.scalar(select(func.count()).select_from(Subscriber)) == 1
