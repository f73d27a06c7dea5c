"""Admins manage staff accounts; every change is in the audit log."""

from __future__ import annotations

from sqlalchemy import select

from tests.factories import PASSWORD, make_user
from webadmin.extensions import db
from webadmin.models.audit import AuditEvent
from webadmin.models.user import Role, StaffSession, User


def _actions() -> list[str]:
    return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_admin_creates_user_who_can_sign_in(client, login_as, app):
    login_as(Role.ADMIN)
    response = client.post(
        "/users/", data={"email": "new@example.com", "role": "viewer", "password": "a good long password"}
    )
    assert response.status_code == 302
    user = db.session.scalar(select(User).where(User.email == "new@example.com"))
    assert user.role == "viewer" and user.check_password("a good long password")
    assert "user.create" in _actions()
    other = app.test_client()
    response = other.post("/login", data={"email": "new@example.com", "password": "a good long password"})
    assert response.status_code == 302


def test_duplicate_email_and_weak_password_change_nothing(client, login_as):
    admin = login_as(Role.ADMIN)
    page = client.post("/users/", data={"email": admin.email, "role": "viewer", "password": "x" * 20})
    assert "already exists" in page.get_data(as_text=True)
    page = client.post("/users/", data={"email": "weak@example.com", "role": "viewer", "password": "short"})
    assert "at least 12 characters" in page.get_data(as_text=True)
    assert db.session.scalar(select(User).where(User.email == "weak@example.com")) is None


def test_change_role_and_last_admin_guard(client, login_as):
    admin = login_as(Role.ADMIN)
    other = make_user(Role.VIEWER)
    client.post(f"/users/{other.id}/role", data={"role": "marketer"})
    db.session.expire_all()
    assert db.session.get(User, other.id).role == "marketer"
    page = client.post(f"/users/{admin.id}/role", data={"role": "viewer"}, follow_redirects=True)
    assert "last active admin" in page.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(User, admin.id).role == "admin"


def test_reset_password_signs_user_out_everywhere(client, login_as, app):
    login_as(Role.ADMIN)
    other = make_user(Role.MARKETER)
    other_client = app.test_client()
    other_client.post("/login", data={"email": other.email, "password": PASSWORD})
    client.post(f"/users/{other.id}/password", data={"password": "brand new password"})
    assert db.session.scalars(select(StaffSession).where(StaffSession.user_id == other.id)).all() == []
    assert other_client.get("/").status_code == 302
    assert other_client.post("/login", data={"email": other.email, "password": "brand new password"}).status_code == 302


def test_admin_cannot_deactivate_self(client, login_as):
    admin = login_as(Role.ADMIN)
    page = client.post(f"/users/{admin.id}/active", data={"active": "0"}, follow_redirects=True)
    assert "cannot deactivate your own account" in page.get_data(as_text=True)


def test_audit_page_lists_and_filters(client, login_as):
    login_as(Role.ADMIN)
    make_user(Role.VIEWER, email="someone@example.com")
    client.post("/users/", data={"email": "audited@example.com", "role": "viewer", "password": "x" * 14})
    page = client.get("/users/audit?action=user.").get_data(as_text=True)
    assert "user.create" in page and "audited@example.com" in page
    assert "auth.login" not in page  # filtered out
    assert "auth.login" in client.get("/users/audit").get_data(as_text=True)


def test_cli_creates_user(runner):
    result = runner.invoke(
        args=["users", "create", "--email", "cli@example.com", "--role", "admin"],
        input="cli password 123\ncli password 123\n",
    )
    assert result.exit_code == 0, result.output
    assert db.session.scalar(select(User).where(User.email == "cli@example.com")).role == "admin"
    again = runner.invoke(args=["users", "create", "--email", "cli@example.com", "--password", "x" * 12])
    assert again.exit_code != 0 and "already exists" in again.output


def test_sign_out_and_every_user_change_leave_an_audit_row(client, login_as, auth):
    admin = login_as(Role.ADMIN)
    other = make_user(Role.VIEWER)
    for path, data in [
        (f"/users/{other.id}/role", {"role": "marketer"}),
        (f"/users/{other.id}/role", {"role": "marketer"}),  # no change, no row
        (f"/users/{other.id}/active", {"active": "0"}),
        (f"/users/{other.id}/active", {"active": "1"}),
        (f"/users/{other.id}/password", {"password": "another long password"}),
    ]:
        assert client.post(path, data=data).status_code == 302, path
    assert auth.logout().status_code == 302
    events = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action != "auth.login").order_by(AuditEvent.id)
    ).all()
    assert [(e.actor, e.actor_id, e.action, e.object_type, e.object_id) for e in events] == [
        (admin.email, admin.id, "user.role", "user", str(other.id)),
        (admin.email, admin.id, "user.deactivate", "user", str(other.id)),
        (admin.email, admin.id, "user.activate", "user", str(other.id)),
        (admin.email, admin.id, "user.password_reset", "user", str(other.id)),
        (admin.email, admin.id, "auth.logout", None, None),
    ]
    role, *_, reset, logout = events
    assert role.detail == {"email": other.email, "old": "viewer", "new": "marketer"}
    assert "another long password" not in repr(reset.detail)  # what was set is never recorded
    assert logout.address == "127.0.0.1" and all(e.at is not None for e in events)
