"""Error pages in the console, JSON errors under /api/, CSRF on console forms."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.conftest import build_app, csrf_token_from
from tests.factories import make_user
from webadmin.extensions import db
from webadmin.models.user import Role, User


def test_console_404_is_a_page(client, login_as):
    login_as(Role.VIEWER)
    response = client.get("/no-such-page")
    assert response.status_code == 404 and "Page not found" in response.get_data(as_text=True)


def test_api_errors_are_json(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"
    assert set(response.json["error"]) == {"code", "message", "field"}
    assert client.get("/api/v1/health").json == {"status": "ok"}


def test_api_405_is_json_and_says_what_is_allowed(client):
    response = client.post("/api/v1/health")
    assert response.status_code == 405
    assert response.json["error"]["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}


def test_unexpected_error_is_500_page_without_details(app, client, login_as):
    def boom():
        raise RuntimeError("secret internals")

    from webadmin.access import Role as R
    from webadmin.access import allow

    app.add_url_rule("/boom", "boom", allow(R.VIEWER)(boom))
    login_as(Role.VIEWER)
    response = client.get("/boom")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "Something went wrong" in body and "secret internals" not in body


def test_csrf_is_enforced_on_console_forms(database_url, tmp_path):
    app = build_app(database_url, tmp_path, WTF_CSRF_ENABLED=True)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            db.create_all()
        admin = make_user(Role.ADMIN)
        client = app.test_client()
        login_page = client.get("/login").get_data(as_text=True)
        token = csrf_token_from(login_page)
        forged = client.post("/login", data={"email": admin.email, "password": "correct horse battery staple"})
        assert forged.status_code == 400 and "form expired" in forged.get_data(as_text=True)
        ok = client.post(
            "/login", data={"email": admin.email, "password": "correct horse battery staple", "csrf_token": token}
        )
        assert ok.status_code == 302
        page = client.get("/users/").get_data(as_text=True)
        assert 'hx-headers=\'{"X-CSRFToken": "' in page  # htmx requests carry the token too
        forged = client.post("/users/", data={"email": "n@example.com", "role": "admin", "password": "x" * 14})
        assert forged.status_code == 400
        assert db.session.scalar(select(func.count(User.id))) == 1
        db.session.remove()
        if db.engine.dialect.name == "postgresql":
            from tests.conftest import _truncate_all

            _truncate_all()
        db.engine.dispose()
