"""Settings → Sharing: admins choose who gets /share pushes (all users or a group) and the hourly limits; the values
are checked by the settings service whoever writes them, and each change is audited."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.api.conftest import client_with_key
from tests.api.factories import make_api_key
from tests.factories import make_app, make_device, make_group, make_subscriber
from webadmin.extensions import db
from webadmin.models.audit import AuditEvent
from webadmin.models.message import Message
from webadmin.models.offer import Offer
from webadmin.models.user import Role
from webadmin.services import ServiceError, settings


def _form(**overrides):
    return {"audience": "all", "max_per_hour": 5, "max_per_app_per_hour": 100, **overrides}


def test_an_admin_sends_shares_to_a_group_and_the_change_is_audited(app, client, login_as):
    app.config["ENGINE_KEEP_CONNECTIONS"] = False
    push_app = make_app("Nibs")
    alice, bob = make_subscriber("alice@example.com"), make_subscriber("bob@example.com")
    make_device(push_app, alice)
    make_device(push_app, bob)
    group = make_group("Friends", [bob])
    offer = Offer(app_id=push_app.id, name="Chocolate Week", deep_link="nibs://offers/1")
    db.session.add(offer)
    db.session.commit()
    admin = login_as(Role.ADMIN)
    page = client.get("/settings/sharing").get_data(as_text=True)
    assert f'<option value="group:{group.id}">Group: Friends</option>' in page
    saved = client.post("/settings/sharing", data=_form(audience=f"group:{group.id}", max_per_hour=3),
                        follow_redirects=True)
    assert "Sharing settings saved." in saved.get_data(as_text=True)
    assert (settings.get("share.audience"), settings.get("share.max_per_hour")) == (f"group:{group.id}", 3)
    changes = db.session.execute(select(AuditEvent.object_id, AuditEvent.actor, AuditEvent.detail)
                                 .where(AuditEvent.action == "setting.change")).all()
    assert [(key, who) for key, who, _ in changes] == [("share.audience", admin.email),
                                                       ("share.max_per_hour", admin.email)]  # unchanged: not audited
    assert changes[0][2] == {"old": None, "new": f"group:{group.id}"}
    api = client_with_key(app, make_api_key(push_app)[1])
    shared = api.post("/api/v1/share", json={"sharerKey": "alice@example.com", "sharerName": "Alice",
                                             "itemId": offer.id})
    assert shared.status_code == 202 and shared.json["targeted"] == 1
    assert db.session.scalars(select(Message.recipient)).all() == ["bob@example.com"]


@pytest.mark.parametrize("form, problem", [
    ({"audience": "group:999"}, "Not a valid choice"),
    ({"max_per_hour": 0}, "Number must be between 1 and 10000"),
    ({"max_per_app_per_hour": ""}, "This field is required"),
])
def test_bad_values_are_refused_and_nothing_changes(client, login_as, form, problem):
    login_as(Role.ADMIN)
    page = client.post("/settings/sharing", data=_form(**form))
    assert page.status_code == 200 and problem in page.get_data(as_text=True)
    assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "setting.change")) is None


def test_the_service_checks_values_whoever_writes_them(app):
    group = make_group("Testers")
    for key, value in [("share.audience", "everyone"), ("share.audience", "group:12345"), ("share.audience", 7),
                       ("share.max_per_hour", -1), ("share.max_per_hour", "5"), ("share.max_per_hour", True),
                       ("share.max_per_app_per_hour", 10**9)]:
        with pytest.raises(ServiceError) as refused:
            settings.put(key, value, actor="test")
        assert refused.value.field == key
    db.session.rollback()
    settings.put("share.audience", f"group:{group.id}", actor="test")
    assert settings.get("share.audience") == f"group:{group.id}"
    with pytest.raises(ServiceError):  # one bad value: none of the others is written either
        settings.put_many({"share.max_per_hour": 9, "share.max_per_app_per_hour": 0}, actor="test")
    db.session.rollback()
    assert settings.get("share.max_per_hour") == 5


def test_staff_who_are_not_admins_read_but_cannot_change(client, login_as):
    login_as(Role.MARKETER)
    page = client.get("/settings/sharing").get_data(as_text=True)
    assert "<fieldset disabled>" in page and "Only admins change this." in page
    assert client.post("/settings/sharing", data=_form(max_per_hour=50)).status_code == 403
    assert settings.get("share.max_per_hour") == 5
    assert 'href="/settings/sharing"' in client.get("/settings/").get_data(as_text=True)
