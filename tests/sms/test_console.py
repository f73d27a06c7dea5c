"""Settings → SMS (roles, CSRF, encrypted credentials never shown back, validation, Test connection) and the compose
page's fallback fields and preview."""

from __future__ import annotations

import re

from flask import Flask
from sqlalchemy import func, select, update

from tests.conftest import csrf_token_from
from tests.factories import make_device, make_subscriber
from tests.providers.fakes import Recorded, reply
from webadmin.extensions import db
from webadmin.models.audience import Subscriber
from webadmin.models.audit import AuditEvent
from webadmin.models.campaign import Campaign
from webadmin.models.sms import SmsChannel
from webadmin.models.user import Role
from webadmin.services.sms_channel import stored_credentials

TOKEN = "smsapi-token-never-shown-9f8e7d"
SID = "AC" + "0123456789abcdef" * 2


def _channel() -> SmsChannel | None:
    db.session.expire_all()
    return db.session.scalar(select(SmsChannel))


def _audit(prefix: str = "sms_channel") -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action.startswith(prefix))
                                   .order_by(AuditEvent.id)))


def _save_smsapi(client, **overrides):
    data = {"backend": "smsapi", "sender": "Nibs", "cred_token": TOKEN, "cred_account": "smsapi.pl",
            "cred_normalize": "no"} | overrides
    return client.post("/settings/sms", data=data)


def test_admin_saves_smsapi_and_the_token_is_encrypted_and_never_shown_back(client, login_as):
    login_as(Role.ADMIN)
    assert 'id="sms-none"' in client.get("/settings/sms").get_data(as_text=True)
    response = _save_smsapi(client)
    assert response.status_code == 302 and response.headers["Location"] == "/settings/sms"
    channel = _channel()
    assert (channel.backend, channel.sender) == ("smsapi", "Nibs")
    assert TOKEN not in channel.credentials_encrypted and stored_credentials(channel)["token"] == TOKEN
    page = client.get("/settings/sms").get_data(as_text=True)
    assert TOKEN not in page and "token stored, encrypted; never shown" in page and "SMSAPI" in page
    assert 'value="smsapi-token' not in page
    [event] = _audit()
    assert TOKEN not in str(event.detail) and event.detail["credentials_changed"] == ["account", "normalize", "token"]
    # A blank secret keeps the stored one; a new sender is saved.
    assert _save_smsapi(client, cred_token="", sender="NibsShop").status_code == 302
    assert stored_credentials(_channel())["token"] == TOKEN and _channel().sender == "NibsShop"


def test_bad_input_is_shown_beside_its_field_and_changes_nothing(client, login_as):
    login_as(Role.ADMIN)
    page = _save_smsapi(client, cred_token="", sender="A sender name far too long").get_data(as_text=True)
    assert "API token is required." in page and "at most 11 letters" in page
    assert _channel() is None and _audit() == []
    twilio = {"backend": "twilio", "sender": "not-a-number", "cred_account_sid": "AC123", "cred_auth_token": "x" * 20}
    page = client.post("/settings/sms", data=twilio).get_data(as_text=True)
    assert "AC followed by 32 hexadecimal digits" in page and "Twilio needs a sender" in page
    assert _channel() is None
    page = client.post("/settings/sms", data={"backend": "carrier-pigeon"}).get_data(as_text=True)
    assert _channel() is None and "Choose one of the listed SMS providers." in page


def test_switching_provider_drops_the_old_credentials(client, login_as):
    login_as(Role.ADMIN)
    _save_smsapi(client)
    form = client.get("/settings/sms?backend=twilio", headers={"HX-Request": "true", "HX-Target": "sms-channel-form"})
    fragment = form.get_data(as_text=True)
    assert fragment.lstrip().startswith('<div id="sms-channel-form">') and "replaces the stored SMSAPI" in fragment
    data = {"backend": "twilio", "sender": "+15005550006", "cred_account_sid": SID, "cred_auth_token": "tw-secret-1"}
    assert client.post("/settings/sms", data=data).status_code == 302
    assert stored_credentials(_channel()) == {"account_sid": SID, "auth_token": "tw-secret-1"}


def test_viewers_read_and_only_admins_change(client, login_as):
    login_as(Role.ADMIN)
    _save_smsapi(client)
    client.post("/logout")
    login_as(Role.VIEWER)
    page = client.get("/settings/sms").get_data(as_text=True)
    assert "Only admins change the SMS channel." in page and 'id="sms-form"' not in page and TOKEN not in page
    assert _save_smsapi(client, sender="Hijack").status_code == 403
    assert client.post("/settings/sms/test").status_code == 403
    client.post("/logout")
    login_as(Role.MARKETER)
    assert _save_smsapi(client, sender="Hijack").status_code == 403
    assert _channel().sender == "Nibs"


def test_forged_posts_without_a_csrf_token_are_refused(app: Flask, client, login_as):
    login_as(Role.ADMIN)
    _save_smsapi(client)
    app.config["WTF_CSRF_ENABLED"] = True
    assert _save_smsapi(client, sender="Forged").status_code == 400
    assert client.post("/settings/sms/test").status_code == 400
    assert _channel().sender == "Nibs" and [e.action for e in _audit()] == ["sms_channel.save"]
    token = csrf_token_from(client.get("/settings/sms").get_data(as_text=True))
    assert _save_smsapi(client, sender="Real", csrf_token=token).status_code == 302


def test_test_connection_against_the_fake_redacts_and_lifts_a_halt(client, login_as, live_fake):
    def profile(rec: Recorded):
        if rec.headers["Authorization"] == f"Bearer {TOKEN}":
            return reply({"error": 101, "message": f"Invalid authorization info for {TOKEN}"}, status=401)(rec)
        return reply({"name": "Nibs", "points": 12.5})(rec)

    live_fake.route("GET", "/profile", profile)
    login_as(Role.ADMIN)
    _save_smsapi(client)
    channel = _channel()
    channel.options, channel.halted, channel.error = {"endpoint": live_fake.url}, True, "refused"
    db.session.commit()
    fragment = client.post("/settings/sms/test", headers={"HX-Request": "true", "HX-Target": "sms-status"})
    html = fragment.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="sms-status"') and "Connection failed" in html
    assert TOKEN not in html and "••••" in html
    assert _channel().halted and TOKEN not in _channel().error
    _save_smsapi(client, cred_token="a-token-that-works")  # saving lifts the halt; the test passes now
    channel = _channel()
    channel.options, channel.halted = {"endpoint": live_fake.url}, True
    db.session.commit()
    response = client.post("/settings/sms/test", follow_redirects=True).get_data(as_text=True)
    assert "Connection OK: SMSAPI accepted the token. Points left: 12.5." in response
    assert not _channel().halted and _channel().error is None
    assert [e.detail["ok"] for e in _audit("sms_channel.test")] == [False, True]


# ---- compose


def _compose_form(push_app, **overrides):
    data = {"submission_id": "sms-1", "app_id": push_app.id, "text": "Half price today",
            "open_direct": "https://nibs.example/offers/1", "target": "all", "when": "now", "time_zone": "UTC",
            "sms_fallback": "y", "sms_after": "30", "sms_after_unit": "minutes", "sms_text": ""}
    return data | overrides


def _nibs():
    from tests.factories import make_app

    push_app = make_app("Nibs")
    for key, phone in (("a@example.com", "+48500100001"), ("b@example.com", None), ("c@example.com", "+48500100003")):
        subscriber = make_subscriber(key, phone=phone)
        make_device(push_app, subscriber, "android")
        make_device(push_app, subscriber, "ios")
    return push_app


def test_compose_saves_the_fallback_with_the_default_text(client, login_as, sms_channel):
    sms_channel()
    push_app = _nibs()
    login_as(Role.MARKETER)
    page = client.get("/compose/").get_data(as_text=True)
    assert 'id="compose-sms-fallback"' in page and "<strong>2</strong> subscriber(s) would get an SMS" in page
    response = client.post("/compose/", data=_compose_form(push_app, sms_after="2", sms_after_unit="hours"))
    campaign = db.session.scalar(select(Campaign))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert (campaign.sms_fallback_seconds, campaign.sms_fallback_text) == (7200,
                                                                          "Half price today https://nibs.example/offers/1")
    confirm = client.get(f"/campaigns/{campaign.id}").get_data(as_text=True)
    assert 'id="campaigns-sms"' in confirm and "2 hours" in confirm and "starts when the campaign is sent" in confirm
    duplicate = client.get(f"/compose/?from={campaign.id}").get_data(as_text=True)
    assert re.search(r'<input (?=[^>]*\bchecked\b)[^>]*id="sms_fallback"', duplicate)
    assert 'name="sms_after" type="number" value="2"' in duplicate and '<option selected value="hours">' in duplicate


def test_compose_refuses_a_bad_fallback_and_creates_nothing(client, login_as, sms_channel):
    push_app = _nibs()
    login_as(Role.MARKETER)
    no_channel = client.post("/compose/", data=_compose_form(push_app)).get_data(as_text=True)
    assert "No SMS channel is configured" in no_channel
    sms_channel()
    cases = [
        (_compose_form(push_app, sms_after="73", sms_after_unit="hours"),
         "Choose a window between 1 minute and 72 hours"),
        (_compose_form(push_app, sms_after=""), "Say how long to wait before the SMS."),
        (_compose_form(push_app, sms_text="€" * 600), "shorten it to at most 6"),
    ]
    for data, message in cases:
        assert message in client.post("/compose/", data=data).get_data(as_text=True), message
    assert db.session.scalar(select(func.count(Campaign.id))) == 0
    # Unticked, the other fields are ignored.
    assert client.post("/compose/", data=_compose_form(push_app, sms_fallback="", sms_after="999")).status_code == 302
    assert db.session.scalar(select(Campaign.sms_fallback_seconds)) is None


def test_the_sms_preview_counts_phones_and_parts(client, login_as, sms_channel):
    sms_channel()
    push_app = _nibs()
    login_as(Role.MARKETER)
    args = _compose_form(push_app, open_direct="nibs://offers/1")
    html = client.get("/compose/sms-preview", query_string=args).get_data(as_text=True)
    assert html.lstrip().startswith('<div id="compose-sms"')
    assert "<strong>2</strong> subscriber(s) would get an SMS" in html and "<strong>1</strong> of the 3" in html
    assert "Half price today</span>" in html and "nibs://" not in html  # an app link is left out of the SMS
    assert "16 characters (GSM-7)" in html and "<strong>1</strong> SMS part(s)" in html
    long = client.get("/compose/sms-preview", query_string=args | {"sms_text": "Zażółć " * 20}).get_data(as_text=True)
    assert "(UCS-2)" in long and "<strong>3</strong> SMS part(s)" in long
    keys = client.get("/compose/sms-preview",
                      query_string=args | {"target": "keys", "keys": "b@example.com"}).get_data(as_text=True)
    assert "<strong>0</strong> subscriber(s) would get an SMS" in keys and "<strong>1</strong> of the 1" in keys
    client.post("/logout")
    login_as(Role.VIEWER)
    assert client.get("/compose/sms-preview", query_string=args).status_code == 403


def test_the_preview_counts_only_numbers_an_sms_can_reach(client, login_as, sms_channel):
    from webadmin.models.sms import SmsBlock

    sms_channel()
    push_app = _nibs()  # a and c have numbers, b has none
    for key, phone in (("d@example.com", "0048500100"), ("e@example.com", "+48500100005")):
        make_device(push_app, make_subscriber(key, phone=phone), "android")
    db.session.execute(update(Subscriber).where(Subscriber.subscriber_key == "d@example.com").values(phone="500 100"))
    e = db.session.scalar(select(Subscriber).where(Subscriber.subscriber_key == "e@example.com"))
    db.session.add(SmsBlock(subscriber_id=e.id, phone="+48500100005", reason="opted_out"))
    db.session.commit()
    login_as(Role.MARKETER)
    html = client.get("/compose/sms-preview", query_string=_compose_form(push_app)).get_data(as_text=True)
    # d's number is not E.164 and e replied STOP earlier: neither counts as reachable.
    assert "<strong>2</strong> subscriber(s) would get an SMS" in html and "<strong>3</strong> of the 5" in html
    assert "no usable phone number" in html


def test_an_admin_sets_the_apps_web_address_and_compose_uses_it(client, login_as, sms_channel):
    from webadmin.models.app import App

    sms_channel()
    push_app = _nibs()
    login_as(Role.ADMIN)
    form = {"name": "Nibs", "platforms": ["android", "ios", "web"], "deep_link_scheme": "nibs"}
    for bad in ("http://nibs.example", "https://user:pw@nibs.example", "https://nibs.example/?q=1", "nibs://x"):
        page = client.post(f"/settings/apps/{push_app.id}/edit", data=form | {"web_link_base": bad})
        assert page.status_code == 200 and "The web address" in page.get_data(as_text=True), bad
        db.session.expire_all()
        assert db.session.get(App, push_app.id).web_link_base is None
    saved = client.post(f"/settings/apps/{push_app.id}/edit", data=form | {"web_link_base": "https://nibs.example/"})
    assert saved.status_code == 302
    db.session.expire_all()
    assert db.session.get(App, push_app.id).web_link_base == "https://nibs.example"
    assert "<code>https://nibs.example</code>" in client.get(f"/settings/apps/{push_app.id}").get_data(as_text=True)
    [event] = _audit("app.update")
    assert event.detail["web_link_base"] == [None, "https://nibs.example"]
    client.post("/logout")
    login_as(Role.MARKETER)
    args = _compose_form(push_app, open_direct="nibs://offers/1")
    html = client.get("/compose/sms-preview", query_string=args).get_data(as_text=True)
    assert "Half price today https://nibs.example/offers/1</span>" in html


def test_key_rotation_re_encrypts_the_sms_channel(app, runner, client, login_as):
    from cryptography.fernet import Fernet

    from webadmin.crypto import decrypt_credentials

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app.config["CREDENTIALS_KEYS"] = old
    login_as(Role.ADMIN)
    _save_smsapi(client)
    app.config["CREDENTIALS_KEYS"] = f"{new},{old}"
    result = runner.invoke(args=["channels", "rotate-key"])
    assert result.exit_code == 0 and "1 SMS channel(s)" in result.output
    app.config["CREDENTIALS_KEYS"] = new  # the old key is gone: still readable
    assert decrypt_credentials(_channel().credentials_encrypted)["token"] == TOKEN
