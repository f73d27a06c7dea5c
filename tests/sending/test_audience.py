"""Audience resolution: the same query counts and materialises; skips what must be skipped."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from tests.factories import make_device, make_group, make_subscriber
from webadmin.extensions import db
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.sending.audience import AudienceSpec, count_audience, materialize, message_uuid
from webadmin.services import settings


def _targets(app_id, raw, selection="all") -> tuple[int, set[int]]:
    spec = AudienceSpec.from_dict(raw)
    count = count_audience(app_id, spec, selection)
    created = materialize(99, app_id, spec, selection, None)
    ids = set(db.session.scalars(select(Message.device_id).where(Message.campaign_id == 99)))
    db.session.rollback()
    assert count == created == len(ids)
    return count, ids


def _campaign_stub(push_app):
    from webadmin.models.campaign import Campaign

    db.session.add(Campaign(id=99, app_id=push_app.id, text="x"))
    db.session.commit()


def test_all_users_skip_invalid_unsubscribed_and_opted_out(push_app):
    _campaign_stub(push_app)
    alice, bob = make_subscriber("alice@example.com"), make_subscriber("bob@example.com", opted_out=True)
    ok1 = make_device(push_app, alice, "android")
    ok2 = make_device(push_app, alice, "ios")
    make_device(push_app, alice, "web", status="invalid")
    make_device(push_app, alice, "web", status="unsubscribed")
    make_device(push_app, bob, "android")
    anonymous = make_device(push_app, None, "web")
    _, ids = _targets(push_app.id, {"type": "all"})
    assert ids == {ok1.id, ok2.id, anonymous.id}


def test_keys_groups_and_platform_filter(push_app):
    _campaign_stub(push_app)
    alice, bob, carol = (make_subscriber(f"{n}@example.com") for n in ("alice", "bob", "carol"))
    a_android, a_ios = make_device(push_app, alice, "android"), make_device(push_app, alice, "ios")
    b_android = make_device(push_app, bob, "android")
    make_device(push_app, carol, "android")
    make_device(push_app, None, "android")  # anonymous devices are never targeted by keys or groups
    assert _targets(push_app.id, {"type": "keys", "keys": [" Alice@Example.com", "bob@example.com", "nobody@x.y"]})[1] \
        == {a_android.id, a_ios.id, b_android.id}
    assert _targets(push_app.id, {"type": "keys", "keys": ["alice@example.com"], "platforms": ["ios"]})[1] == {a_ios.id}
    group = make_group("Key customers", [alice, bob])
    assert _targets(push_app.id, {"type": "groups", "group_ids": [group.id], "platforms": ["android"]})[1] == {
        a_android.id, b_android.id}
    count, _ = _targets(push_app.id, {"type": "platforms", "platforms": ["android"]})
    assert count == 4


def test_newest_device_only_setting(push_app):
    _campaign_stub(push_app)
    alice = make_subscriber("alice@example.com")
    now = utcnow()
    make_device(push_app, alice, "android", registered_at=now - timedelta(days=3))
    newest = make_device(push_app, alice, "ios", registered_at=now - timedelta(days=1))
    make_device(push_app, alice, "web", registered_at=now, status="invalid")  # newest, but invalid
    anonymous = make_device(push_app, None, "web")
    settings.put("delivery.device_selection", "newest", actor="test")
    _, ids = _targets(push_app.id, {"type": "all"}, settings.get("delivery.device_selection"))
    assert ids == {newest.id, anonymous.id}


def test_message_uuids_derive_from_campaign_and_device(push_app):
    from webadmin.models.campaign import Campaign

    campaign = Campaign(app_id=push_app.id, text="x", uuid="0123abcd-ef45-4678-9abc-def012345678")
    db.session.add(campaign)
    db.session.commit()
    devices = [make_device(push_app, make_subscriber(f"u{i}@example.com"), "android") for i in range(3)]
    materialize(campaign.id, push_app.id, AudienceSpec.from_dict({"type": "all"}), "all", None)
    stored = {row.device_id: row.uuid for row in db.session.execute(select(Message.device_id, Message.uuid))}
    assert stored == {d.id: message_uuid(campaign.uuid, d.id) for d in devices}
    for text in stored.values():
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 8 and parsed.variant == uuid.RFC_4122
        assert text.startswith("0123abcd-ef45-8678-")  # the campaign's first 64 bits, version 8
    # The SQL and the Python agree beyond 32 bits too (device ids are 62 bits in the format).
    assert message_uuid(campaign.uuid, 2**40 + 5) == "0123abcd-ef45-8678-8000-010000000005"
    assert uuid.UUID(message_uuid(campaign.uuid, 2**62 - 1)).int & (2**62 - 1) == 2**62 - 1


def test_bad_specs_are_refused():
    import pytest

    from webadmin.services import ServiceError

    for raw in ({"type": "everyone"}, {"type": "keys"}, {"type": "groups"}, {"type": "platforms"},
                {"type": "all", "platforms": ["windows"]}):
        with pytest.raises(ServiceError):
            AudienceSpec.from_dict(raw)
