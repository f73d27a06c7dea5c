"""Settings: apps, API keys shown once and stored hashed, revocation, the delivery setting, admin-only writes."""

from __future__ import annotations

import re

import pytest
from flask import Flask, url_for
from sqlalchemy import select

from tests.factories import everything_stored
from webadmin.extensions import db
from webadmin.models.app import ApiKey, App, hash_api_key
from webadmin.models.audit import AuditEvent
from webadmin.models.user import Role
from webadmin.services import ServiceError, apps, channels, settings
from webadmin.services.channels import ChannelInput

SECRET = re.compile(r"wa_[0-9a-f]{8}\.[A-Za-z0-9_-]{20,}")


def _audit(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def _make_app(name: str = "Nibs") -> App:
    return apps.create_app(name, ["android", "ios", "web"], "nibs", actor="test")


def test_admin_creates_app_and_sees_it_listed(client, login_as):
    login_as(Role.ADMIN)
    response = client.post(
        "/settings/apps/new", data={"name": "Nibs", "platforms": ["android", "web"], "deep_link_scheme": "nibs://"}
    )
    assert response.status_code == 302
    app = db.session.scalar(select(App).where(App.name == "Nibs"))
    assert app.platforms == ["android", "web"] and app.deep_link_scheme == "nibs"
    assert response.headers["Location"].endswith(f"/settings/apps/{app.id}")
    [event] = _audit("app.create")
    assert event.detail["name"] == "Nibs" and event.object_id == str(app.id)
    page = client.get("/settings/").get_data(as_text=True)
    assert "Nibs" in page and "nibs://" in page and "apps-empty" not in page
    page = client.get(f"/settings/apps/{app.id}").get_data(as_text=True)
    assert "Channels" in page and "Debug (nothing is sent)" in page and "No API keys yet" in page


def test_settings_page_has_useful_empty_state_and_api_docs_link(client, login_as):
    login_as(Role.ADMIN)
    page = client.get("/settings/").get_data(as_text=True)
    assert 'id="apps-empty"' in page and "Add your first app" in page
    assert 'href="/api/v1/docs"' in page


@pytest.mark.parametrize(
    ("scheme", "message"),
    [
        ("http", "cannot be a deep-link scheme"),
        ("https", "cannot be a deep-link scheme"),
        ("JavaScript", "cannot be a deep-link scheme"),
        ("data", "cannot be a deep-link scheme"),
        ("file://", "cannot be a deep-link scheme"),
        ("vbscript", "cannot be a deep-link scheme"),
        ("1nibs", "a lowercase letter"),
        ("ni bs", "a lowercase letter"),
        ("nibs/offers", "a lowercase letter"),
        ("n" * 41, "a lowercase letter"),
    ],
)
def test_invalid_scheme_is_refused_and_nothing_written(client, login_as, scheme, message):
    login_as(Role.ADMIN)
    data = {"name": "Nibs", "platforms": ["ios"], "deep_link_scheme": scheme}
    response = client.post("/settings/apps/new", data=data)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert db.session.scalars(select(App)).all() == []
    assert _audit("app.create") == []


def test_service_refuses_dangerous_scheme_too():
    with pytest.raises(ServiceError, match="cannot be a deep-link scheme"):
        apps.normalize_scheme("javascript:")


def test_app_needs_a_platform_and_a_unique_name(client, login_as):
    login_as(Role.ADMIN)
    _make_app("Nibs")
    page = client.post("/settings/apps/new", data={"name": "Frania", "deep_link_scheme": "frania"})
    assert "Choose at least one platform" in page.get_data(as_text=True)
    page = client.post("/settings/apps/new", data={"name": "nibs", "platforms": ["ios"], "deep_link_scheme": ""})
    assert "already has this name" in page.get_data(as_text=True)
    assert db.session.scalar(select(App.name).where(App.name != "Nibs")) is None


def test_admin_edits_app_and_the_change_is_audited(client, login_as):
    login_as(Role.ADMIN)
    app = _make_app()
    form = client.get(f"/settings/apps/{app.id}/edit").get_data(as_text=True)
    assert 'value="nibs"' in form
    response = client.post(
        f"/settings/apps/{app.id}/edit", data={"name": "Nibs Club", "platforms": ["ios"], "deep_link_scheme": "nibs"}
    )
    assert response.status_code == 302
    db.session.expire_all()
    assert (app.name, app.platforms, app.deep_link_scheme) == ("Nibs Club", ["ios"], "nibs")
    [event] = _audit("app.update")
    assert event.detail == {"name": ["Nibs", "Nibs Club"], "platforms": [["android", "ios", "web"], ["ios"]]}
    page = client.post(
        f"/settings/apps/{app.id}/edit", data={"name": "Nibs Club", "platforms": ["ios"], "deep_link_scheme": "http"}
    ).get_data(as_text=True)
    assert "cannot be a deep-link scheme" in page
    db.session.expire_all()
    assert app.deep_link_scheme == "nibs"


def test_api_key_is_shown_once_and_stored_only_hashed(client, login_as, caplog):
    login_as(Role.ADMIN)
    app = _make_app()
    response = client.post(f"/settings/apps/{app.id}/keys", data={"name": "iOS production"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    secret = SECRET.search(page).group(0)
    assert "shown only on this page" in page
    key = db.session.scalar(select(ApiKey).where(ApiKey.app_id == app.id))
    assert key.key_hash == hash_api_key(secret) and key.matches(secret)
    assert secret.startswith(key.prefix + ".") and key.created_by.endswith("@example.com")
    random_part = secret.split(".", 1)[1]
    stored = everything_stored()
    assert random_part not in stored and key.prefix in stored
    [event] = _audit("api_key.create")
    assert event.detail == {"app_id": app.id, "name": "iOS production", "prefix": key.prefix}
    later = client.get(f"/settings/apps/{app.id}").get_data(as_text=True)
    assert random_part not in later and f"{key.prefix}…" in later and "iOS production" in later
    assert random_part not in client.get("/users/audit").get_data(as_text=True)
    assert random_part not in caplog.text


def test_api_key_needs_a_name(client, login_as):
    login_as(Role.ADMIN)
    app = _make_app()
    response = client.post(f"/settings/apps/{app.id}/keys", data={"name": "  "})
    assert response.status_code == 200
    assert "This field is required" in response.get_data(as_text=True)
    assert db.session.scalars(select(ApiKey)).all() == []


def test_revoke_marks_the_key_and_is_audited(client, login_as):
    login_as(Role.ADMIN)
    app = _make_app()
    key, _ = apps.create_api_key(app, "Android", actor="test")
    kept, _ = apps.create_api_key(app, "Web", actor="test")
    response = client.post(f"/settings/apps/{app.id}/keys/{key.id}/revoke", follow_redirects=True)
    page = response.get_data(as_text=True)
    assert f"Key {key.prefix} (Android) revoked" in page
    row = re.search(rf'<tr id="key-{key.id}".*?</tr>', page, re.S).group(0)
    assert "revoked" in row and "Revoke…" not in row
    assert "Revoke…" in re.search(rf'<tr id="key-{kept.id}".*?</tr>', page, re.S).group(0)
    db.session.expire_all()
    assert key.revoked_at is not None and not key.active and kept.active
    [event] = _audit("api_key.revoke")
    assert event.detail["prefix"] == key.prefix
    again = client.post(f"/settings/apps/{app.id}/keys/{key.id}/revoke", follow_redirects=True)
    assert "already revoked" in again.get_data(as_text=True)
    assert len(_audit("api_key.revoke")) == 1
    assert "1</td>" in client.get("/settings/").get_data(as_text=True)  # one active key left


def test_a_key_from_settings_works_on_the_api_until_revoked(app: Flask, client, login_as):
    login_as(Role.ADMIN)
    nibs = _make_app()
    page = client.post(f"/settings/apps/{nibs.id}/keys", data={"name": "iOS"}).get_data(as_text=True)
    secret = SECRET.search(page).group(0)
    device_app = app.test_client()
    device_app.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    assert device_app.put("/api/v1/devices/sim-ios-1", json={"platform": "ios"}).status_code in (200, 201)
    key = db.session.scalar(select(ApiKey))
    client.post(f"/settings/apps/{nibs.id}/keys/{key.id}/revoke")
    assert device_app.put("/api/v1/devices/sim-ios-1", json={"platform": "ios"}).status_code == 401


def test_a_key_of_another_app_is_not_found(client, login_as):
    login_as(Role.ADMIN)
    nibs, other = _make_app("Nibs"), _make_app("Frania")
    key, _ = apps.create_api_key(other, "Android", actor="test")
    assert client.post(f"/settings/apps/{nibs.id}/keys/{key.id}/revoke").status_code == 404
    db.session.expire_all()
    assert key.active


def test_delivery_setting_is_saved_and_audited(client, login_as):
    login_as(Role.ADMIN)
    assert settings.get("delivery.device_selection") == "all"
    page = client.get("/settings/").get_data(as_text=True)
    assert re.search(r'<input[^>]*checked[^>]*value="all"|<input[^>]*value="all"[^>]*checked', page)
    response = client.post("/settings/delivery", data={"device_selection": "newest"}, follow_redirects=True)
    assert "Delivery setting saved" in response.get_data(as_text=True)
    db.session.expire_all()
    assert settings.get("delivery.device_selection") == "newest"
    [event] = _audit("setting.change")
    assert event.object_id == "delivery.device_selection" and event.detail["new"] == "newest"
    refused = client.post("/settings/delivery", data={"device_selection": "random"}, follow_redirects=True)
    assert "Choose one of the delivery options" in refused.get_data(as_text=True)
    db.session.expire_all()
    assert settings.get("delivery.device_selection") == "newest"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MARKETER])
def test_viewer_and_marketer_read_but_cannot_post_to_any_settings_route(app: Flask, client, login_as, role):
    app_row = _make_app()
    key, _ = apps.create_api_key(app_row, "Android", actor="test")
    channel = channels.create_channel(app_row, "web", "simulator", ChannelInput(name="Sim", enabled=True),
                                      actor="test").channel
    login_as(role)
    page = client.get("/settings/").get_data(as_text=True)
    assert "Nibs" in page and "Only admins change this" in page and "New app" not in page
    detail = client.get(f"/settings/apps/{app_row.id}").get_data(as_text=True)
    assert key.prefix in detail and "Create key" not in detail and "Revoke…" not in detail
    values = {"app_id": app_row.id, "key_id": key.id, "channel_id": channel.id}
    rules = app.url_map.iter_rules()
    posts = [rule for rule in rules if rule.endpoint.startswith("settings.") and "POST" in rule.methods]
    assert len(posts) >= 5
    for rule in posts:
        with app.test_request_context():
            path = url_for(rule.endpoint, **{name: values[name] for name in rule.arguments})
        data = {"name": "x", "platforms": ["ios"], "deep_link_scheme": "x", "device_selection": "newest"}
        assert client.post(path, data=data).status_code == 403, path
    db.session.expire_all()
    assert key.active and app_row.name == "Nibs" and settings.get("delivery.device_selection") == "all"
    assert channel.enabled and channel.name == "Sim" and channel.error is None
    assert db.session.scalar(select(ApiKey.id).where(ApiKey.id != key.id)) is None
