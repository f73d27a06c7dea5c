"""Sign-in, first run, sessions that end on the server, rate limits and safe redirects."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from tests.conftest import _truncate_all, build_app
from tests.factories import PASSWORD, make_user
from webadmin.extensions import db
from webadmin.models.audit import AuditEvent
from webadmin.models.user import LoginAttempt, Role, StaffSession, User
from webadmin.services import accounts


def test_empty_install_leads_to_first_run(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/setup")
    page = client.get("/setup").get_data(as_text=True)
    assert "Create the first admin account" in page


def test_first_run_creates_admin_and_then_disappears(client):
    response = client.post(
        "/setup",
        data={"email": "Boss@Example.com", "password": "long enough pass", "confirm": "long enough pass"},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/"
    user = db.session.scalar(select(User))
    assert (user.email, user.role) == ("boss@example.com", "admin")
    assert client.get("/").status_code == 200  # signed in
    # A second visitor cannot use the first-run page any more.
    other = client.application.test_client()
    again = other.post("/setup", data={"email": "x@example.com", "password": "p" * 12, "confirm": "p" * 12})
    assert again.status_code == 302 and again.headers["Location"].endswith("/login")
    assert db.session.scalar(select(func.count(User.id))) == 1


def test_first_run_refuses_short_password(client):
    response = client.post("/setup", data={"email": "a@example.com", "password": "short", "confirm": "short"})
    assert response.status_code == 200
    assert "at least 12 characters" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count(User.id))) == 0


def test_login_logout_and_cookie_replay(client, auth):
    user = make_user(Role.VIEWER)
    assert auth.login(user.email).status_code == 302
    assert client.get("/").status_code == 200
    stolen = client.get_cookie("session").value
    assert auth.logout().status_code == 302
    assert db.session.scalar(select(func.count(StaffSession.id))) == 0
    # Replaying the old cookie after sign-out gets the sign-in page, not the dashboard.
    replay = client.application.test_client()
    replay.set_cookie("session", stolen)
    response = replay.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_deactivation_ends_sessions(client, auth, app):
    admin = make_user(Role.ADMIN)
    victim = make_user(Role.MARKETER)
    victim_client = app.test_client()
    victim_client.post("/login", data={"email": victim.email, "password": PASSWORD})
    assert victim_client.get("/").status_code == 200
    auth.login(admin.email)
    assert client.post(f"/users/{victim.id}/active", data={"active": "0"}).status_code == 302
    response = victim_client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert auth.login(victim.email).status_code == 200  # cannot sign in again either


def test_wrong_password_is_recorded_and_rate_limited_per_account(client, auth, app):
    user = make_user(Role.VIEWER)
    for _ in range(app.config["LOGIN_MAX_FAILURES_ACCOUNT"]):
        page = auth.login(user.email, "wrong password!").get_data(as_text=True)
        assert "Wrong email or password" in page
    # Even the right password is refused while the account is paused, with a clear message.
    page = auth.login(user.email).get_data(as_text=True)
    assert "Too many failed sign-ins for this account" in page
    assert client.get("/").status_code == 302
    failures = db.session.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == "auth.login_failed"))
    assert failures == app.config["LOGIN_MAX_FAILURES_ACCOUNT"]


def test_rate_limited_per_address(client, auth, app):
    app.config["LOGIN_MAX_FAILURES_ADDRESS"] = 3
    user = make_user(Role.VIEWER)
    for i in range(3):
        assert "Wrong email" in auth.login(f"nobody{i}@example.com", "wrong password!").get_data(as_text=True)
    page = auth.login(user.email).get_data(as_text=True)
    assert "Too many failed sign-ins from your address" in page


def test_next_only_redirects_on_site(client, auth):
    user = make_user(Role.ADMIN)
    for evil in ("https://evil.test/", "//evil.test/x", "/\\evil.test", "javascript:alert(1)"):
        response = auth.login(user.email, next=evil)
        assert response.headers["Location"] == "/", evil
        auth.logout()
    response = auth.login(user.email, next="/users/audit?action=user.")
    assert response.headers["Location"] == "/users/audit?action=user."


def test_anonymous_is_sent_to_login_with_next(client):
    make_user(Role.ADMIN)
    response = client.get("/users/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/users/")


def test_logout_requires_post(client, auth):
    user = make_user(Role.VIEWER)
    auth.login(user.email)
    assert client.get("/logout").status_code == 405
    assert client.get("/").status_code == 200


@pytest.fixture
def proxied_app(database_url, tmp_path):
    """The app behind one TLS proxy (WEBADMIN_PROXY_HOPS=1), with a small per-address sign-in limit."""
    application = build_app(database_url, tmp_path, PROXY_HOPS=1, LOGIN_MAX_FAILURES_ADDRESS=2)
    with application.app_context():
        if db.engine.dialect.name == "sqlite":
            db.create_all()
        yield application
        db.session.remove()
        if db.engine.dialect.name == "postgresql":
            _truncate_all()
        db.engine.dispose()


def _via_proxy(client, client_address: str, email: str, password: str = PASSWORD):
    """Sign in as the proxy forwards it: the connection comes from the proxy, the client is in the header."""
    return client.post(
        "/login",
        data={"email": email, "password": password},
        headers={"X-Forwarded-For": client_address, "X-Forwarded-Proto": "https"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )


def test_behind_a_proxy_limits_and_audit_use_the_client_address(proxied_app):
    client = proxied_app.test_client()
    user = make_user(Role.VIEWER)
    for _ in range(2):
        assert "Wrong email" in _via_proxy(client, "203.0.113.7", "nobody@example.com", "wrong!").get_data(True)
    assert "from your address" in _via_proxy(client, "203.0.113.7", user.email).get_data(as_text=True)
    # Another visitor behind the same proxy is not paused; a forged first hop is not believed.
    assert _via_proxy(client, "192.0.2.66, 198.51.100.2", user.email).status_code == 302
    addresses = db.session.scalars(select(LoginAttempt.address)).all()
    login = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "auth.login"))
    assert addresses == ["203.0.113.7", "203.0.113.7"] and login.address == "198.51.100.2"
    session = db.session.scalar(select(StaffSession))
    assert session.address == "198.51.100.2"


def test_without_proxy_hops_forwarded_headers_are_ignored(client, auth):
    user = make_user(Role.VIEWER)
    response = client.post("/login", data={"email": user.email, "password": PASSWORD},
                           headers={"X-Forwarded-For": "203.0.113.7"})
    assert response.status_code == 302
    login = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "auth.login"))
    assert login.address == "127.0.0.1"  # anyone can send the header; only a configured proxy is trusted


def test_concurrent_first_runs_make_exactly_one_admin(app, monkeypatch):
    """Two people open the first-run page on a new install and submit different emails at the same moment."""
    real_has_users = accounts.has_users

    def slow_has_users() -> bool:
        found = real_has_users()
        time.sleep(0.3)  # widen the gap between the check and the insert, where the race lived
        return found

    monkeypatch.setattr(accounts, "has_users", slow_has_users)
    barrier, answers = threading.Barrier(2), {}

    def submit(email: str) -> None:
        barrier.wait(timeout=10)
        response = app.test_client().post(
            "/setup", data={"email": email, "password": "long enough pass", "confirm": "long enough pass"}
        )
        answers[email] = response.headers.get("Location")

    threads = [threading.Thread(target=submit, args=(f"first{i}@example.com",)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    db.session.expire_all()
    admins = db.session.scalars(select(User.email)).all()
    assert len(admins) == 1, admins
    assert answers[admins[0]] == "/" and sorted(answers.values()) == ["/", "/login"]
