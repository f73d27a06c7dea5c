"""Settings → Apps → Channels: admins add, edit, enable, disable, delete and test channels; secrets never come back."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask, url_for
from sqlalchemy import select

from tests.conftest import csrf_token_from
from tests.factories import everything_stored, make_app
from tests.providers.apns_fake import make_tls_files
from tests.providers.fakes import FakeServer, ThreadedFake, free_port_url, reply
from webadmin.crypto import decrypt_credentials
from webadmin.extensions import db
from webadmin.models.audit import AuditEvent
from webadmin.models.campaign import Channel
from webadmin.models.user import Role
from webadmin.providers.fcm import FcmBackend
from webadmin.sending.channels import routes_for_app
from webadmin.sending.runtime import worker_runtime
from webadmin.services import ServiceError, channels
from webadmin.services.channels import ChannelInput

API_KEY = "os-key-ZZ-distinctive-9f3a7c1e5b77"  # a OneSignal API key that must never come back out
ONESIGNAL_APP_ID = "5eb5a37e-b458-11e3-ac11-000c2940e62c"
FCM_SEND = "/v1/projects/demo-proj/messages:send"


# ---- helpers


class Upload(NamedTuple):
    """A file to upload (made into a fresh stream per request: the test client closes what it sends)."""

    content: bytes


def _new_url(app, platform: str, backend: str) -> str:
    return f"/settings/apps/{app.id}/channels/new?platform={platform}&backend={backend}"


def _onesignal_form(**overrides: Any) -> dict[str, Any]:
    return {"name": "OneSignal prod", "cred_app_id": ONESIGNAL_APP_ID, "cred_api_key": API_KEY, "enabled": "y",
            **overrides}


def _fcm_form(service_account: dict[str, str], fake: FakeServer | None = None, **overrides: Any) -> dict[str, Any]:
    data = {"name": "FCM prod", "enabled": "y",
            "cred_service_account_json": (io.BytesIO(json.dumps(service_account).encode()), "service-account.json")}
    if fake is not None:
        data |= {"option_endpoint": fake.url, "option_auth_endpoint": fake.url + "/token"}
    return data | overrides


def _only_channel() -> Channel:
    db.session.expire_all()
    [channel] = db.session.scalars(select(Channel)).all()
    return channel


def _audit(prefix: str = "channel.") -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.action.startswith(prefix)).order_by(AuditEvent.id)
    return list(db.session.scalars(query))


def _secret_pieces(service_account: dict[str, str]) -> list[str]:
    """The private key's body lines: any one of them showing up anywhere is a leak."""
    return [line for line in service_account["private_key"].splitlines() if len(line) > 40]


def _add_onesignal(client, app, **overrides: Any) -> Channel:
    response = client.post(_new_url(app, "android", "onesignal"), data=_onesignal_form(**overrides))
    assert response.status_code == 302, response.get_data(as_text=True)
    return db.session.scalar(select(Channel).order_by(Channel.id.desc()))


def _htmx(channel: Channel) -> dict[str, str]:
    return {"HX-Request": "true", "HX-Target": f"settings-channel-{channel.id}"}


def _ec_p8() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _certificate(days: int = 30) -> tuple[str, str]:
    """A self-signed push certificate (PEM) and its key, valid for `days` (negative: expired)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Apple Push Services: com.example.nibs")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=400))
            .not_valid_after(now + timedelta(days=days)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


@pytest.fixture
def nibs():
    return make_app("Nibs")


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    """A fake provider server on its own thread (the console runs its own event loop for Test connection)."""
    with ThreadedFake() as server:
        yield server


def _fcm_fake(fake: FakeServer, send: Any = None, token: Any = None) -> None:
    """Google's token endpoint and FCM's send on one fake; a validate-only send to the dummy token is refused."""
    fake.route("POST", "/token", token or reply({"access_token": "at-1", "expires_in": 3600, "token_type": "Bearer"}))
    invalid_token = {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                               "message": "The registration token is not a valid FCM registration token",
                               "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                            "errorCode": "INVALID_ARGUMENT"}]}}
    fake.route("POST", FCM_SEND, send or reply(invalid_token, status=400))


# ---- adding, and never showing a secret again


def test_admin_adds_a_channel_through_the_two_step_form(client, login_as, nibs):
    login_as(Role.ADMIN)
    page = client.get(f"/settings/apps/{nibs.id}").get_data(as_text=True)
    assert "Add channel" in page and page.count("Debug (nothing is sent)") == 3
    chooser = client.get(f"/settings/apps/{nibs.id}/channels/new?platform=ios").get_data(as_text=True)
    assert 'name="platform"' in chooser and "OneSignal" in chooser and "iOS only" in chooser  # APNs serves iOS only
    refused = client.get(f"/settings/apps/{nibs.id}/channels/new?platform=android&backend=apns")
    assert "does not send to android" in refused.get_data(as_text=True)
    unchosen = client.get(f"/settings/apps/{nibs.id}/channels/new?platform=android&backend=")
    assert "Choose a provider." in unchosen.get_data(as_text=True)
    form = client.get(_new_url(nibs, "android", "fcm")).get_data(as_text=True)
    assert 'type="file"' in form and 'name="cred_service_account_json"' in form
    assert 'enctype="multipart/form-data"' in form
    assert 'name="option_endpoint"' in form and 'name="option_auth_endpoint"' in form


def test_a_secret_is_encrypted_and_never_shown_logged_or_audited(client, login_as, nibs, service_account, caplog):
    caplog.set_level(logging.DEBUG)
    login_as(Role.ADMIN)
    bodies = []
    response = client.post(_new_url(nibs, "android", "onesignal"), data=_onesignal_form(), follow_redirects=True)
    bodies.append(response.get_data(as_text=True))
    assert "Channel OneSignal prod added" in bodies[-1]
    response = client.post(_new_url(nibs, "web", "fcm"), data=_fcm_form(service_account), follow_redirects=True)
    bodies.append(response.get_data(as_text=True))
    assert "Channel FCM prod added" in bodies[-1]
    onesignal, fcm = db.session.scalars(select(Channel).order_by(Channel.id)).all()
    for path in (f"/settings/apps/{nibs.id}", f"/settings/apps/{nibs.id}/channels/{onesignal.id}/edit",
                 f"/settings/apps/{nibs.id}/channels/{fcm.id}/edit", "/users/audit"):
        bodies.append(client.get(path).get_data(as_text=True))
    edit_onesignal, edit_fcm = bodies[3], bodies[4]
    assert "•••• stored (ends …5b77)" in edit_onesignal and ONESIGNAL_APP_ID in edit_onesignal  # non-secret shown
    assert "•••• stored (project demo-proj, pusher@demo-proj.iam.gserviceaccount.com)" in edit_fcm

    assert decrypt_credentials(onesignal.credentials_encrypted) == {"app_id": ONESIGNAL_APP_ID, "api_key": API_KEY}
    assert json.loads(decrypt_credentials(fcm.credentials_encrypted)["service_account_json"]) == service_account
    secrets = [API_KEY, *_secret_pieces(service_account)]
    stored, audit_rows = everything_stored(), repr([(e.action, e.detail) for e in _audit("")])
    for secret in secrets:
        assert all(secret not in body for body in bodies), "a secret was rendered"
        assert secret not in stored, "a secret is stored in plaintext"
        assert secret not in audit_rows and secret not in caplog.text
    [created, _] = _audit("channel.create")
    assert created.detail == {"app_id": nibs.id, "platform": "android", "backend": "onesignal",
                              "name": "OneSignal prod", "enabled": True, "options": {},
                              "credential_fields": ["api_key", "app_id"], "disabled": []}


def test_editing_with_a_blank_secret_keeps_the_stored_one(client, login_as, nibs, caplog):
    login_as(Role.ADMIN)
    channel = _add_onesignal(client, nibs)
    edit = f"/settings/apps/{nibs.id}/channels/{channel.id}/edit"
    other_app_id = "0f6bd3a4-1111-4d2e-9c61-2b0cbd1c0a77"
    response = client.post(edit, data={"name": "OneSignal main", "cred_app_id": other_app_id, "cred_api_key": "",
                                       "enabled": "y", "option_batch_size": "5000"})
    assert response.status_code == 302
    channel = _only_channel()
    assert channel.name == "OneSignal main" and channel.options == {"batch_size": 5000}
    assert decrypt_credentials(channel.credentials_encrypted) == {"app_id": other_app_id, "api_key": API_KEY}
    client.post(edit, data={"name": "OneSignal main", "cred_app_id": other_app_id,
                            "cred_api_key": "os-key-rotated-000000000000", "enabled": "y", "option_batch_size": "5000"})
    assert decrypt_credentials(_only_channel().credentials_encrypted)["api_key"] == "os-key-rotated-000000000000"
    first, second = _audit("channel.update")
    assert first.detail["credentials_changed"] == ["app_id"] and first.detail["name"] == ["OneSignal prod",
                                                                                          "OneSignal main"]
    assert first.detail["options"] == [{}, {"batch_size": 5000}]
    assert second.detail["credentials_changed"] == ["api_key"] and "os-key-rotated" not in repr(second.detail)
    assert "os-key-rotated" not in caplog.text


def test_apns_token_and_certificate_credentials_are_checked_and_optional_secrets_can_be_removed(client, login_as,
                                                                                                 nibs):
    login_as(Role.ADMIN)
    assert "clear_private_key" not in client.get(_new_url(nibs, "ios", "apns")).get_data(as_text=True)
    base = {"name": "APNs", "cred_environment": "sandbox", "cred_bundle_id": "com.example.nibs", "enabled": "y"}
    token = base | {"cred_auth_mode": "token", "cred_team_id": "ABCDE12345", "cred_key_id": "KEY1234567",
                    "cred_private_key": _ec_p8()}
    assert client.post(_new_url(nibs, "ios", "apns"), data=token).status_code == 302
    channel = _only_channel()
    assert decrypt_credentials(channel.credentials_encrypted)["key_id"] == "KEY1234567"

    cert_pem, key_pem = _certificate()
    edit = f"/settings/apps/{nibs.id}/channels/{channel.id}/edit"
    page = client.get(edit).get_data(as_text=True)
    assert "•••• stored (PEM)" in page and 'name="clear_private_key"' in page and "KEY1234567" in page
    upload = (io.BytesIO(cert_pem.encode()), "aps.pem")
    switched = base | {"cred_auth_mode": "certificate", "upload_certificate": upload, "cred_certificate_key": key_pem,
                       "clear_private_key": "y"}
    assert client.post(edit, data=switched).status_code == 302
    stored = decrypt_credentials(_only_channel().credentials_encrypted)
    assert stored["auth_mode"] == "certificate" and stored["certificate"].strip() == cert_pem.strip()
    assert "private_key" not in stored and "team_id" in stored


@pytest.mark.parametrize(
    ("platform", "backend", "data", "field", "message"),
    [
        ("android", "fcm", {"name": "FCM"}, "cred_service_account_json", "Required."),
        ("android", "fcm", {"name": "FCM", "cred_service_account_json": Upload(b"not json")},
         "cred_service_account_json", "This is not a JSON file"),
        ("android", "fcm", {"name": "FCM", "cred_service_account_json": Upload(b'{"project_id": "p"}')},
         "cred_service_account_json", "has no client_email, private_key"),
        ("android", "fcm", {"name": "FCM", "cred_service_account_json": Upload(json.dumps(
            {"project_id": "p", "client_email": "e@p", "private_key": "-----BEGIN PRIVATE KEY-----\nnope"}).encode())},
         "cred_service_account_json", "not a readable PEM key"),
        ("android", "fcm", {"name": "FCM", "cred_service_account_json": Upload(b"\xff\xfe\x00")},
         "cred_service_account_json", "not a text file"),
        ("android", "onesignal", _onesignal_form(cred_app_id="my-app"), "cred_app_id", "8-4-4-4-12 hex digits"),
        ("android", "onesignal", _onesignal_form(cred_api_key=""), "cred_api_key", "Required."),
        ("android", "onesignal", _onesignal_form(name=" "), "name", "This field is required"),
        ("android", "onesignal", _onesignal_form(option_endpoint="http://onesignal.example.com"), "option_endpoint",
         "Use https://"),
        ("android", "onesignal", _onesignal_form(option_endpoint="https://u:p@onesignal.example.com"),
         "option_endpoint", "must not carry a user name"),
        ("android", "onesignal", _onesignal_form(option_batch_size="0"), "option_batch_size", "from 1 to 20,000"),
        ("android", "onesignal", _onesignal_form(option_concurrency="1001"), "option_concurrency",
         "from 1 to 1,000"),
        ("android", "onesignal", _onesignal_form(option_concurrency="many"), "option_concurrency",
         "Not a valid integer value"),
        ("ios", "apns", {"name": "APNs", "cred_auth_mode": "token", "option_ca_file": "certs/ca.pem"},
         "option_ca_file", "Enter an absolute path"),
        ("android", "onesignal", _onesignal_form(option_ca_file="/nonexistent/webadmin-ca.pem"), "option_ca_file",
         "There is no file at this path"),
        ("ios", "apns", {"name": "APNs", "cred_auth_mode": "token", "cred_bundle_id": "com.example.nibs",
                         "cred_team_id": "short", "cred_private_key": "-----BEGIN RSA nope"}, "cred_team_id",
         "Ten characters"),
        ("ios", "apns", {"name": "APNs", "cred_auth_mode": "token", "cred_bundle_id": "com.example.nibs",
                         "cred_team_id": "ABCDE12345", "cred_key_id": "KEY1234567"}, "cred_private_key",
         "contents of the .p8 file"),
        ("ios", "apns", {"name": "APNs", "cred_auth_mode": "certificate", "cred_bundle_id": "com.example.nibs"},
         "cred_certificate", "Required for certificate authentication"),
        ("ios", "apns", {"name": "APNs", "cred_auth_mode": "token"}, "cred_bundle_id", "Required."),
        ("android", "marketing_cloud", {"name": "MC", "cred_client_id": "id", "cred_client_secret": "s3cr3t-value",
                                        "cred_message_id": "MTA6", "cred_auth_base_url": "ftp://x"},
         "cred_auth_base_url", "Enter a full URL"),
    ],
    ids=["fcm-missing", "fcm-not-json", "fcm-incomplete", "fcm-bad-key", "fcm-binary", "onesignal-app-id",
         "onesignal-no-key", "no-name", "http-endpoint", "endpoint-userinfo", "batch-size", "concurrency-range",
         "concurrency-number", "ca-file-relative", "ca-file-missing", "apns-team-id",
         "apns-no-p8", "apns-no-cert", "apns-no-bundle", "mc-auth-url"],
)
def test_invalid_channels_are_refused_beside_the_field_and_change_nothing(client, login_as, nibs, platform, backend,
                                                                          data, field, message):
    login_as(Role.ADMIN)
    data = {k: (io.BytesIO(v.content), "upload.json") if isinstance(v, Upload) else v for k, v in data.items()}
    response = client.post(_new_url(nibs, platform, backend), data=data)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert message in page
    beside = re.search(rf'name="{field}".{{0,2000}}?{re.escape(message)}', page, re.S)
    assert beside, f"{message!r} is not shown beside {field}"
    assert db.session.scalars(select(Channel)).all() == [] and _audit() == []
    for secret in (API_KEY, "s3cr3t-value"):
        assert secret not in page  # a refused form does not send a secret back either


def test_a_platform_the_app_does_not_ship_on_is_refused(client, login_as):
    login_as(Role.ADMIN)
    ios_only = make_app("iOS only")
    ios_only.platforms = ["ios"]
    db.session.commit()
    page = client.get(_new_url(ios_only, "android", "onesignal")).get_data(as_text=True)
    assert "does not ship on android" in page
    assert client.post(_new_url(ios_only, "android", "onesignal"), data=_onesignal_form()).status_code == 200
    assert db.session.scalars(select(Channel)).all() == []


# ---- one enabled channel per platform; disable and delete


def test_enabling_a_channel_disables_the_platforms_other_one(client, login_as, nibs, service_account):
    login_as(Role.ADMIN)
    onesignal = _add_onesignal(client, nibs)
    assert routes_for_app(nibs.id)["android"].channel_id == onesignal.id
    form = client.get(_new_url(nibs, "android", "fcm")).get_data(as_text=True)
    assert "OneSignal prod is the enabled" in form and 'name="enabled" type="checkbox" value="y">' in form  # unticked
    page = client.post(_new_url(nibs, "android", "fcm"), data=_fcm_form(service_account),
                       follow_redirects=True).get_data(as_text=True)
    assert "It is now the Android channel; OneSignal prod was disabled." in page
    fcm = db.session.scalar(select(Channel).where(Channel.backend == "fcm"))
    db.session.expire_all()
    assert fcm.enabled and not onesignal.enabled
    assert routes_for_app(nibs.id)["android"].channel_id == fcm.id
    assert _audit("channel.create")[-1].detail["disabled"] == [onesignal.id]

    client.post(f"/settings/apps/{nibs.id}/channels/{onesignal.id}/enable")
    db.session.expire_all()
    assert onesignal.enabled and not fcm.enabled and routes_for_app(nibs.id)["android"].channel_id == onesignal.id
    assert _audit("channel.enable")[0].detail["disabled"] == [fcm.id]
    enabled = db.session.scalars(select(Channel).where(Channel.platform == "android", Channel.enabled.is_(True)))
    assert len(enabled.all()) == 1


def test_disable_and_delete_send_the_platform_back_to_debug(client, login_as, nibs):
    login_as(Role.ADMIN)
    channel = _add_onesignal(client, nibs)
    page = client.get(f"/settings/apps/{nibs.id}").get_data(as_text=True)
    route = re.search(r'id="settings-platform-android-route">.*?</span>', page, re.S).group(0)
    assert "OneSignal prod" in route and "Debug" not in route
    response = client.post(f"/settings/apps/{nibs.id}/channels/{channel.id}/disable", follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "Android pushes now go to the Debug backend: nothing is sent." in page
    route = re.search(r'id="settings-platform-android-route">.*?</span>', page, re.S).group(0)
    assert "Debug (nothing is sent)" in route and 'id="settings-platform-android-debug"' in page
    assert routes_for_app(nibs.id)["android"].type_name == "debug"

    response = client.post(f"/settings/apps/{nibs.id}/channels/{channel.id}/delete", follow_redirects=True)
    assert "Channel OneSignal prod deleted" in response.get_data(as_text=True)
    assert db.session.scalars(select(Channel)).all() == []
    assert [e.action for e in _audit()] == ["channel.create", "channel.disable", "channel.delete"]
    assert client.post(f"/settings/apps/{nibs.id}/channels/{channel.id}/delete").status_code == 404


def test_a_channel_of_another_app_is_not_found(client, login_as, nibs):
    login_as(Role.ADMIN)
    channel = _add_onesignal(client, nibs)
    other = make_app("Frania")
    for action in ("edit", "enable", "disable", "delete", "test"):
        method = client.get if action == "edit" else client.post
        assert method(f"/settings/apps/{other.id}/channels/{channel.id}/{action}").status_code == 404, action
    assert _only_channel().enabled


# ---- who may do what


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MARKETER])
def test_viewers_and_marketers_see_channels_but_cannot_change_or_test_them(app: Flask, client, login_as, nibs, role):
    channel = channels.create_channel(nibs, "android", "onesignal", ChannelInput(
        name="OneSignal prod", enabled=True, credentials={"app_id": ONESIGNAL_APP_ID, "api_key": API_KEY}),
        actor="test").channel
    channel.error = "OneSignal refused the check: HTTP 403"
    db.session.commit()
    login_as(role)
    page = client.get(f"/settings/apps/{nibs.id}").get_data(as_text=True)
    assert "OneSignal prod" in page and "OneSignal refused the check" in page and API_KEY not in page
    for control in ("Add channel", "Test connection", "Edit</a>", "Delete…", "Disable…"):
        assert control not in page, control
    rules = [r for r in app.url_map.iter_rules() if "/channels" in r.rule]
    assert len(rules) == 6
    for rule in rules:
        with app.test_request_context():
            path = url_for(rule.endpoint, app_id=nibs.id, **({"channel_id": channel.id} if "channel_id" in
                                                                rule.arguments else {}))
        if "GET" in rule.methods:
            assert client.get(path).status_code == 403, path
        assert client.post(path, data=_onesignal_form(name="Hijacked", enabled="")).status_code == 403, path
    channel = _only_channel()
    assert channel.name == "OneSignal prod" and channel.enabled and channel.error.startswith("OneSignal refused")
    assert [e.action for e in _audit()] == ["channel.create"]


def test_forged_posts_without_a_csrf_token_are_refused(app: Flask, client, login_as, nibs):
    login_as(Role.ADMIN)
    channel = _add_onesignal(client, nibs)
    app.config["WTF_CSRF_ENABLED"] = True
    base = f"/settings/apps/{nibs.id}/channels"
    posts = [(f"{base}/{channel.id}/{action}", {}) for action in ("enable", "disable", "delete", "test")]
    posts += [(f"{base}/{channel.id}/edit", _onesignal_form(name="Forged")),
              (_new_url(nibs, "web", "onesignal"), _onesignal_form(name="Forged"))]
    for path, data in posts:
        assert client.post(path, data=data).status_code == 400, path
    channel = _only_channel()
    assert channel.name == "OneSignal prod" and channel.enabled
    assert [e.action for e in _audit()] == ["channel.create"]
    token = csrf_token_from(client.get(f"/settings/apps/{nibs.id}").get_data(as_text=True))
    assert client.post(f"{base}/{channel.id}/disable", data={"csrf_token": token}).status_code == 302
    assert not _only_channel().enabled


def test_concurrency_and_ca_file_are_options_the_backend_gets(client, login_as, nibs, tmp_path):
    login_as(Role.ADMIN)
    tls = make_tls_files(tmp_path)
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("just text\n")
    page = client.post(_new_url(nibs, "android", "onesignal"),
                       data=_onesignal_form(option_ca_file=str(not_pem))).get_data(as_text=True)
    assert "holds no PEM certificate" in page and "just text" not in page
    assert db.session.scalars(select(Channel)).all() == []
    form = client.get(_new_url(nibs, "android", "onesignal")).get_data(as_text=True)
    assert 'name="option_concurrency"' in form and 'name="option_ca_file"' in form
    response = client.post(_new_url(nibs, "android", "onesignal"),
                           data=_onesignal_form(option_concurrency="250", option_ca_file=tls.ca_file))
    assert response.status_code == 302
    channel = _only_channel()
    assert channel.options == {"concurrency": 250, "ca_file": tls.ca_file}
    edit = client.get(f"/settings/apps/{nibs.id}/channels/{channel.id}/edit").get_data(as_text=True)
    assert 'value="250"' in edit and f'value="{tls.ca_file}"' in edit
    with worker_runtime(keep=False) as runtime:
        backend = routes_for_app(nibs.id)["android"].backend(runtime)
        assert (backend.options.concurrency, backend.options.ca_file) == (250, tls.ca_file)
        assert backend.options.batch_size == 2_000  # the other options keep the backend's defaults


# ---- Test connection against local fakes


def test_fcm_test_connection_succeeds_against_the_fake_and_the_engine_routes_to_the_channel(
        client, login_as, nibs, service_account, fake, caplog):
    caplog.set_level(logging.DEBUG)
    _fcm_fake(fake)
    login_as(Role.ADMIN)
    assert client.post(_new_url(nibs, "android", "fcm"), data=_fcm_form(service_account, fake)).status_code == 302
    channel = _only_channel()
    assert channel.options == {"endpoint": fake.url, "auth_endpoint": fake.url + "/token"}
    response = client.post(f"/settings/apps/{nibs.id}/channels/{channel.id}/test", headers=_htmx(channel))
    fragment = response.get_data(as_text=True)
    assert response.status_code == 200 and fragment.lstrip().startswith("<li")  # the fragment alone
    assert f'id="settings-channel-{channel.id}"' in fragment
    assert "Test connection succeeded" in fragment and "Credentials accepted by FCM for project demo-proj" in fragment
    [send] = fake.calls(FCM_SEND)
    assert send.json["validate_only"] is True and send.headers["Authorization"] == "Bearer at-1"
    assert len(fake.calls("/token")) == 1 and "assertion" in fake.calls("/token")[0].form
    assert _only_channel().error is None
    [event] = _audit("channel.test")
    assert event.detail["ok"] is True and event.object_id == str(channel.id)
    assert not any(piece in caplog.text + repr(event.detail) + fragment for piece in _secret_pieces(service_account))

    route = routes_for_app(nibs.id)["android"]
    assert (route.channel_id, route.type_name) == (channel.id, "fcm")
    with worker_runtime(keep=False) as runtime:
        backend = route.backend(runtime)
        assert isinstance(backend, FcmBackend) and backend.options.endpoint == fake.url
        assert backend.project_id == "demo-proj"


def test_fcm_refused_credentials_are_stored_as_the_channels_error_and_shown(client, login_as, nibs, service_account,
                                                                            fake):
    denied = {"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "SenderId mismatch", "details": []}}
    _fcm_fake(fake, send=reply(denied, status=403))
    login_as(Role.ADMIN)
    client.post(_new_url(nibs, "android", "fcm"), data=_fcm_form(service_account, fake))
    channel = _only_channel()
    fragment = client.post(f"/settings/apps/{nibs.id}/channels/{channel.id}/test",
                           headers=_htmx(channel)).get_data(as_text=True)
    assert "Test connection failed" in fragment and "FCM refused the credentials (HTTP 403)" in fragment
    channel = _only_channel()
    assert channel.error.startswith("FCM refused the credentials") and channel.error_at is not None
    page = client.get(f"/settings/apps/{nibs.id}").get_data(as_text=True)
    alert = re.search(rf'<div class="alert alert-danger[^"]*" role="alert" id="settings-channel-{channel.id}-error">'
                      r'.*?</div>', page, re.S).group(0)
    assert "Last error" in alert and channel.error_at.strftime("%Y-%m-%d %H:%M UTC") in alert
    assert "FCM refused the credentials" in alert

    # Without JavaScript: a normal POST, a redirect and a flash; a success clears the error.
    _fcm_fake(fake)  # the fake accepts the credentials now
    response = client.post(f"/settings/apps/{nibs.id}/channels/{channel.id}/test")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/settings/apps/{nibs.id}#app-channels")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "FCM prod: Connection OK." in page and f"settings-channel-{channel.id}-error" not in page
    assert _only_channel().error is None and _only_channel().error_at is None


def test_fcm_token_refusal_and_an_unreachable_endpoint_fail_clearly(client, login_as, nibs, service_account, fake):
    _fcm_fake(fake, token=reply({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, status=400))
    login_as(Role.ADMIN)
    client.post(_new_url(nibs, "android", "fcm"), data=_fcm_form(service_account, fake))
    channel = _only_channel()
    client.post(f"/settings/apps/{nibs.id}/channels/{channel.id}/test")
    assert "token request refused" in _only_channel().error and fake.calls(FCM_SEND) == []
    edit = f"/settings/apps/{nibs.id}/channels/{channel.id}/edit"
    client.post(edit, data={"name": "FCM prod", "enabled": "y", "option_endpoint": free_port_url(),
                            "option_auth_endpoint": free_port_url() + "/token"})
    assert _only_channel().error is not None  # only new credentials clear an error, not new options
    client.post(f"/settings/apps/{nibs.id}/channels/{channel.id}/test")
    assert "unreachable" in _only_channel().error.lower()


def test_a_provider_answer_that_echoes_the_secret_is_redacted(client, login_as, nibs, fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.route("GET", "/notifications", lambda rec: reply(
        {"errors": [f"Access denied for key {rec.headers['Authorization']}"]}, status=403)(rec))
    login_as(Role.ADMIN)
    channel = _add_onesignal(client, nibs, option_endpoint=fake.url)
    fragment = client.post(f"/settings/apps/{nibs.id}/channels/{channel.id}/test",
                           headers=_htmx(channel)).get_data(as_text=True)
    assert "OneSignal refused the check" in fragment and "Access denied for key Key ••••" in fragment
    assert fake.calls("/notifications", "GET")[0].headers["Authorization"] == f"Key {API_KEY}"  # it was sent…
    assert API_KEY not in fragment and API_KEY not in _only_channel().error  # …and is shown nowhere
    assert API_KEY not in repr([e.detail for e in _audit()]) and API_KEY not in caplog.text
    assert API_KEY not in everything_stored()


def test_channels_without_credentials_and_of_an_unknown_backend(client, login_as, nibs):
    login_as(Role.ADMIN)
    db.session.add_all([Channel(app_id=nibs.id, platform="web", backend="simulator", name="Simulator web"),
                        Channel(app_id=nibs.id, platform="ios", backend="gone", name="Old gateway")])
    db.session.commit()
    simulator, gone = db.session.scalars(select(Channel).order_by(Channel.id)).all()
    assert "needs no credentials" in client.get(f"/settings/apps/{nibs.id}/channels/{simulator.id}/edit").get_data(
        as_text=True)
    page = client.post(f"/settings/apps/{nibs.id}/channels/{simulator.id}/test", follow_redirects=True)
    assert "Simulator web: Connection OK." in page.get_data(as_text=True)
    page = client.get(f"/settings/apps/{nibs.id}").get_data(as_text=True)
    assert "gone (backend not installed)" in page
    response = client.get(f"/settings/apps/{nibs.id}/channels/{gone.id}/edit", follow_redirects=True)
    assert "cannot be edited: The provider &#39;gone&#39; is not installed here." in response.get_data(as_text=True)
    client.post(f"/settings/apps/{nibs.id}/channels/{gone.id}/test")
    db.session.expire_all()
    assert "not installed" in gone.error


# ---- key rotation as docs/security.md describes it


def _onesignal_channel(nibs) -> Channel:
    data = ChannelInput(name="OneSignal", enabled=True, credentials={"app_id": ONESIGNAL_APP_ID, "api_key": API_KEY})
    return channels.create_channel(nibs, "android", "onesignal", data, actor="test").channel


def test_rotation_away_from_the_generated_key_needs_it_copied_into_the_setting(app, runner, nibs):
    app.config["CREDENTIALS_KEYS"] = None  # no setting: the key is generated into the instance folder
    channel = _onesignal_channel(nibs)
    generated = (Path(app.config["INSTANCE_PATH"]) / "credentials_key").read_text().strip()
    new = Fernet.generate_key().decode()
    app.config["CREDENTIALS_KEYS"] = new  # the setting replaces the file: without the old key nothing opens
    with pytest.raises(ServiceError, match="cannot be decrypted"):
        channels.stored_credentials(channel)
    app.config["CREDENTIALS_KEYS"] = f"{new},{generated}"
    result = runner.invoke(args=["channels", "rotate-key"])
    assert result.exit_code == 0 and "1 channel(s)" in result.output
    app.config["CREDENTIALS_KEYS"] = new  # the old key removed afterwards
    db.session.expire_all()
    assert channels.stored_credentials(_only_channel())["api_key"] == API_KEY


def test_rotation_stops_without_changing_anything_when_a_row_cannot_be_opened(app, runner, nibs):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app.config["CREDENTIALS_KEYS"] = old
    channel = _onesignal_channel(nibs)
    before = channel.credentials_encrypted
    stranger = Fernet(Fernet.generate_key()).encrypt(b"{}").decode()  # encrypted under a key nobody configured
    db.session.add(Channel(app_id=nibs.id, platform="ios", backend="apns", name="lost", enabled=False,
                           credentials_encrypted=stranger))
    db.session.commit()
    app.config["CREDENTIALS_KEYS"] = f"{new},{old}"
    result = runner.invoke(args=["channels", "rotate-key"])
    assert result.exit_code != 0
    db.session.expire_all()
    assert db.session.get(Channel, channel.id).credentials_encrypted == before  # not re-encrypted either


def _mc_form(**overrides: Any) -> dict[str, Any]:
    return {"name": "MC prod", "cred_client_id": "mc-client", "cred_client_secret": "mc-secret-value",
            "cred_message_id": "MTIzOjExNDow", "cred_auth_mode": "v2",
            "cred_auth_base_url": "https://example.auth.marketingcloudapis.com", "enabled": "y", **overrides}


def test_marketing_cloud_all_users_messageapp_is_an_explained_opt_in(client, login_as, nibs):
    login_as(Role.ADMIN)
    form = client.get(_new_url(nibs, "android", "marketing_cloud")).get_data(as_text=True)
    sending = form.split('id="settings-channel-sending"', 1)[1].split("</fieldset>", 1)[0]
    assert 'name="option_all_users_app"' in sending and "checked" not in sending  # off by default
    assert "ONE messageApp request" in sending and "count can differ" in sending and "opted-out" in sending
    assert 'name="option_all_users_app"' not in form.split("Advanced options", 1)[1]  # not folded away
    assert client.post(_new_url(nibs, "android", "marketing_cloud"), data=_mc_form()).status_code == 302
    assert _only_channel().options == {}
    page = client.get(f"/settings/apps/{nibs.id}").get_data(as_text=True)
    assert "all users → messageApp" not in page
    channel = _only_channel()
    edit = f"/settings/apps/{nibs.id}/channels/{channel.id}/edit"
    assert client.post(edit, data=_mc_form(option_all_users_app="y")).status_code == 302
    assert _only_channel().options == {"all_users_app": True}
    assert "all users → messageApp" in client.get(f"/settings/apps/{nibs.id}").get_data(as_text=True)
    assert re.search(r'<input[^>]*checked[^>]*name="option_all_users_app"', client.get(edit).get_data(as_text=True))
    with worker_runtime(keep=False) as runtime:  # the backend is still built from the stored options
        route = routes_for_app(nibs.id)["android"]
        assert route.backend(runtime).options.all_users_app is True
    assert client.post(edit, data=_mc_form()).status_code == 302  # unticked: back to messageContact
    assert _only_channel().options == {}
