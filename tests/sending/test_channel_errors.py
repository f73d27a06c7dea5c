"""Channel errors from the send path, through dispatch against local fakes of FCM (TLS, HTTP/2) and OneSignal:
they show on the channel in Settings, and provider text never carries the channel's secrets into the database,
the pause reason, the audit log or the worker log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.factories import make_device, make_subscriber
from tests.providers.apns_fake import TlsFiles, make_tls_files
from tests.providers.fakes import Recorded, ThreadedFake, reply
from tests.providers.fcm_fake import FakeFcm
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.audit import AuditEvent
from webadmin.models.campaign import Campaign, Channel
from webadmin.models.message import Message
from webadmin.sending.engine import SENDER_DATA_LIMIT, dispatch, sender_data
from webadmin.services import campaigns
from webadmin.services.campaigns import CampaignDraft
from webadmin.services.channel_credentials import MASK

FCM_SEND = "/v1/projects/demo-proj/messages:send"
API_KEY = "os-key-distinctive-5c1e9f3a7b22"  # what a OneSignal 401 echoes back
ONESIGNAL_APP_ID = "5eb5a37e-b458-11e3-ac11-000c2940e62c"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and the fake's certificate for 127.0.0.1."""
    return make_tls_files(Path(tmp_path_factory.mktemp("fcm-tls")))


@pytest.fixture
def fake_fcm(tls: TlsFiles) -> Iterator[FakeFcm]:
    """The fake FCM on its own thread (dispatch drives its own event loop)."""
    with ThreadedFake(FakeFcm(tls)) as server:  # type: ignore[arg-type]
        server.route("POST", "/token", reply({"access_token": "at-1", "expires_in": 3600, "token_type": "Bearer"}))
        yield server  # type: ignore[misc]


@pytest.fixture
def fake_onesignal() -> Iterator[Any]:
    """A fake OneSignal on its own thread."""
    with ThreadedFake() as server:
        yield server


def _fcm_channel(app_id: int, fake: FakeFcm, tls: TlsFiles, service_account: dict[str, str]) -> Channel:
    options = {"endpoint": fake.url, "auth_endpoint": fake.url + "/token", "ca_file": tls.ca_file, "timeout": 5}
    credentials = {"service_account_json": json.dumps(service_account)}
    return _channel(app_id, "fcm", "FCM prod", credentials, options)


def _channel(app_id: int, backend: str, name: str, credentials: dict[str, Any], options: dict[str, Any]) -> Channel:
    channel = Channel(app_id=app_id, platform="android", backend=backend, name=name, options=options,
                      credentials_encrypted=encrypt_credentials(credentials))
    db.session.add(channel)
    db.session.commit()
    return channel


def _started(app_id: int) -> Campaign:
    campaign = campaigns.create_campaign(CampaignDraft(app_id=app_id, text="Hi"), actor="test")
    db.session.commit()
    campaigns.start(campaign, actor="test")
    return campaign


def _third_party_auth_error(echo: str) -> Any:
    """FCM's answer when the APNs/web push credentials behind the project are wrong (a per-message error)."""

    def responder(rec: Recorded) -> Any:
        if rec.json["message"]["token"].startswith("ok-"):
            return reply({"name": "projects/demo-proj/messages/1"})(rec)
        detail = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "THIRD_PARTY_AUTH_ERROR"}
        body = {"error": {"code": 401, "status": "UNAUTHENTICATED", "details": [detail],
                          "message": f"Auth error from APNS or Web Push Service (key {echo})"}}
        return reply(body, status=401)(rec)

    return responder


def test_a_per_message_channel_error_pauses_and_shows_on_the_channel_in_settings(
        push_app, manual_dispatch, fake_fcm, tls, service_account, login_as, client, caplog):
    fake_fcm.route("POST", FCM_SEND, _third_party_auth_error(service_account["private_key_id"]))
    channel = _fcm_channel(push_app.id, fake_fcm, tls, service_account)
    make_device(push_app, make_subscriber(), token="ok-1")
    for i in range(3):
        make_device(push_app, make_subscriber(), token=f"ios-web-{i}")
    campaign = _started(push_app.id)
    with caplog.at_level(logging.WARNING, logger="webadmin.sending.engine"):
        report = dispatch(campaign.id)
    assert report.stopped_because.startswith("paused: Channel FCM prod refused: THIRD_PARTY_AUTH_ERROR")
    db.session.expire_all()
    error = db.session.get(Channel, channel.id).error
    assert error.startswith("THIRD_PARTY_AUTH_ERROR: Auth error from APNS or Web Push Service")
    # Secret material the provider echoed (here the service account's key id) is masked.
    assert service_account["private_key_id"] not in error and MASK in error
    states = sorted(db.session.scalars(select(Message.state).where(Message.campaign_id == campaign.id)))
    assert states == ["SENT", "WAITING", "WAITING", "WAITING"]  # the refused ones are released for the resume
    login_as("admin")
    page = client.get(f"/settings/apps/{push_app.id}").get_data(as_text=True)
    assert "Auth error from APNS or Web Push Service" in page and service_account["private_key_id"] not in page
    assert service_account["private_key_id"] not in caplog.text and "paused" in caplog.text


@pytest.mark.parametrize("accepted_first", [False, True])
def test_provider_text_echoing_the_secret_is_redacted_everywhere_it_is_kept(
        push_app, manual_dispatch, fake_onesignal, caplog, accepted_first):
    """OneSignal answers 401 quoting the API key. With accepted_first the first chunk is accepted and only the
    second is refused (the channel-error path of a partly sent batch)."""
    refused = reply({"errors": [f"Access denied. Please include an 'Authorization: Key {API_KEY}' header"]},
                    status=401)
    answers = [reply({"id": "notification-1"}), refused] if accepted_first else [refused]
    fake_onesignal.route("POST", "/notifications", *answers)
    options = {"endpoint": fake_onesignal.url, "batch_size": 1, "concurrency": 1}
    channel = _channel(push_app.id, "onesignal", "OneSignal prod", {"app_id": ONESIGNAL_APP_ID, "api_key": API_KEY},
                       options)
    for i in range(2):
        make_device(push_app, make_subscriber(), token=f"sub-{i}")
    campaign = _started(push_app.id)
    with caplog.at_level(logging.INFO):
        dispatch(campaign.id)
    db.session.expire_all()
    campaign = db.session.get(Campaign, campaign.id)
    error = db.session.get(Channel, channel.id).error
    pause = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "campaign.pause"))
    assert campaign.status == "paused" and "credentials refused" in campaign.status_reason
    assert "Access denied" in error and MASK in error and MASK in campaign.status_reason
    kept = [error, campaign.status_reason, json.dumps(pause.detail), caplog.text]
    kept += [m.error or "" for m in db.session.scalars(select(Message))]
    assert [text for text in kept if API_KEY in text] == []
    assert fake_onesignal.calls("/notifications")[0].headers["Authorization"] == f"Key {API_KEY}"  # it was sent
    assert campaign.sent == (1 if accepted_first else 0)


def _fcm_error(status: int, code: str, message: str) -> Any:
    detail = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
    state = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 503: "UNAVAILABLE"}[status]
    return reply({"error": {"code": status, "status": state, "message": message, "details": [detail]}}, status=status)


def test_provider_answers_are_kept_in_extra_sender_data_bounded_and_redacted(
        push_app, manual_dispatch, fake_fcm, tls, service_account):
    answers = {
        "ok-1": reply({"name": "projects/demo-proj/messages/1"}),
        "gone-1": _fcm_error(404, "UNREGISTERED", "Requested entity was not found."),
        "busy-1": _fcm_error(503, "UNAVAILABLE", "x" * 10_000),
        "bad-1": _fcm_error(400, "INVALID_ARGUMENT", f"Invalid data (key {service_account['private_key_id']})"),
    }
    fake_fcm.route("POST", FCM_SEND, lambda rec: answers[rec.json["message"]["token"]](rec))
    _fcm_channel(push_app.id, fake_fcm, tls, service_account)
    for token in answers:
        make_device(push_app, make_subscriber(), token=token)
    campaign = _started(push_app.id)
    dispatch(campaign.id)
    db.session.expire_all()
    rows = db.session.execute(select(Device.token, Message.state, Message.extra_sender_data)
                              .join(Device, Device.id == Message.device_id))
    kept = {token: (state, data) for token, state, data in rows}
    assert kept["ok-1"] == ("SENT", None)  # the answer was only the message id
    assert kept["gone-1"][0] == "ERROR" and kept["gone-1"][1]["details"][0]["errorCode"] == "UNREGISTERED"
    state, busy = kept["busy-1"]
    assert state == "ERROR_RETRY" and len(busy["truncated"]) == SENDER_DATA_LIMIT
    state, bad = kept["bad-1"]
    assert state == "ERROR" and bad["message"] == f"Invalid data (key {MASK})"


def test_sender_data_of_an_accepted_message_only_when_it_says_more_than_the_id():
    from webadmin.providers.base import SendResult
    from webadmin.sending.channels import DEBUG_ROUTE

    plain = SendResult(1, ok=True, provider_message_id="m-1", raw={"name": "m-1"})
    richer = SendResult(1, ok=True, provider_message_id="m-1", raw={"name": "m-1", "canonical": "tok-2"})
    assert sender_data(plain, DEBUG_ROUTE) is None
    assert sender_data(richer, DEBUG_ROUTE) == {"name": "m-1", "canonical": "tok-2"}
