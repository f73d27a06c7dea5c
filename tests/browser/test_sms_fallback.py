"""The SMS fallback demo in Chromium: compose with "if not opened within 1 minute, send an SMS" (the live preview
counts phones and SMS parts), send through the Simulator, tap on one phone, let the window pass, and watch the
campaign page show the one SMS that went out."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.browser.test_campaign_flow import _sign_in
from tests.factories import make_app, make_subscriber
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.campaign import Campaign, Channel
from webadmin.models.sms import SmsChannel, SmsMessage
from webadmin.models.types import utcnow
from webadmin.models.user import Role
from webadmin.services.audience import DeviceRegistration, register_device
from webadmin.sms.fallback import tick

pytestmark = pytest.mark.browser


def _demo(live_app) -> None:
    """The Nibs app on the Simulator, a Debug SMS channel, Anna and Ben with phones, Cleo without."""
    live_app.config["ENGINE_KEEP_CONNECTIONS"] = False
    push_app = make_app("Nibs", scheme="nibs")
    for platform in ("android", "ios", "web"):
        db.session.add(Channel(app_id=push_app.id, platform=platform, backend="simulator", name=platform,
                               credentials_encrypted=encrypt_credentials({})))
    db.session.add(SmsChannel(backend="debug", sender="Nibs", credentials_encrypted=encrypt_credentials({})))
    db.session.commit()
    for name, phone in (("anna", "+48500100200"), ("ben", "+48500100201"), ("cleo", None)):
        make_subscriber(f"{name}@example.com", phone=phone)
        register_device(push_app, f"sim-android-{name}",
                        DeviceRegistration(platform="android", subscriber_key=f"{name}@example.com"))


def _run_later(live_app) -> None:
    """The fallback run two minutes from now, on a thread of its own as in a consumer (this thread has Playwright's
    event loop registered, which the worker runtime must not share)."""

    def run() -> None:
        with live_app.app_context():
            tick(utcnow() + timedelta(minutes=2))
            db.session.remove()

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(30)


def test_watch_a_fallback_happen(page, live_app, artifacts):
    _demo(live_app)
    _sign_in(page, Role.MARKETER)
    page.goto("/compose/")
    page.fill("textarea[name=text]", "Half price today")
    page.fill("input[name=open_direct]", "https://nibs.example/offers/1")
    page.check("input[name=sms_fallback]")
    page.fill("input[name=sms_after]", "1")
    page.wait_for_function("document.querySelector('#compose-sms-counts strong')?.textContent === '2'")
    assert "1 of the 3 have no usable phone number" in page.inner_text("#compose-sms-counts")
    page.wait_for_function("document.querySelector('#compose-sms-text')?.textContent.includes('https://nibs.example')")
    assert "(GSM-7)" in page.inner_text("#compose-sms-text")
    page.fill("textarea[name=sms_text]", "Zażółć gęślą jaźń — " * 4)
    page.wait_for_function("document.querySelector('#compose-sms-text')?.textContent.includes('UCS-2')")
    assert "2 SMS part(s)" in page.inner_text("#compose-sms-text")
    page.fill("textarea[name=sms_text]", "")
    page.wait_for_function("document.querySelector('#compose-sms-text')?.textContent.includes('GSM-7')")

    page.click("text=Review and confirm")
    page.wait_for_selector("#campaigns-confirm")
    assert "1 minute" in page.inner_text("#campaigns-sms")
    page.click("text=Send now to 3 devices")
    page.wait_for_selector("#campaigns-progress [data-status=sent]")
    campaign = db.session.scalar(select(Campaign))
    assert campaign.sms_fallback_text == "Half price today https://nibs.example/offers/1"

    page.goto("/simulator/")
    page.click("text=sim-android-ben")
    page.wait_for_selector(".wa-notification")
    page.click(".wa-notification")  # Ben opens his push: no SMS for him
    page.wait_for_selector("#simulator-route")

    page.goto(f"/campaigns/{campaign.id}")
    assert page.locator("#campaigns-sms-empty").count() == 1
    _run_later(live_app)  # the minute passes: the periodic run, without waiting for it
    page.wait_for_selector("#campaigns-sms-rows", timeout=15_000)  # the section polls itself
    rows = page.inner_text("#campaigns-sms-rows")
    assert "anna@example.com" in rows and "DEBUG" in rows and "+48500100200" in rows
    assert "cleo@example.com" in rows and "no phone" in rows and "ben@example.com" not in rows
    assert "SMS fallback sent\t1" in page.inner_text("#campaigns-sms-counts")
    page.screenshot(path=str(artifacts / "sms-fallback-campaign.png"), full_page=True)
    db.session.expire_all()
    assert sorted(db.session.scalars(select(SmsMessage.state))) == ["DEBUG", "SKIPPED"]
    assert page.console_errors == [], "\n".join(page.console_errors)
