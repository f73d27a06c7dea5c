"""Compose → send to a group through the Simulator → progress 100% → the phone shows it → tap opens the offer;
the progress bar polling a real queue worker (below 100%, then 100%, then no more polls); the template picker;
schedule then cancel; a viewer sees no send buttons and a forged POST is refused."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.factories import PASSWORD, make_app, make_group, make_subscriber, make_user
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.campaign import Campaign, Channel
from webadmin.models.message import Template
from webadmin.models.offer import Offer
from webadmin.models.types import utcnow
from webadmin.models.user import Role
from webadmin.queue import huey, init_queue
from webadmin.services import campaigns
from webadmin.services.audience import DeviceRegistration, register_device
from webadmin.services.campaigns import CampaignDraft

pytestmark = pytest.mark.browser


def _sign_in(page, role):
    user = make_user(role)
    page.goto("/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    return user


def _simulated_audience(live_app):
    live_app.config["ENGINE_KEEP_CONNECTIONS"] = False
    push_app = make_app("Nibs", scheme="nibs")
    for platform in ("android", "ios", "web"):
        db.session.add(Channel(app_id=push_app.id, platform=platform, backend="simulator", name=platform,
                               credentials_encrypted=encrypt_credentials({})))
    alice = make_subscriber("alice@example.com")
    make_subscriber("bob@example.com")
    register_device(push_app, "sim-ios-alice", DeviceRegistration(platform="ios", subscriber_key="alice@example.com"))
    register_device(push_app, "sim-android-bob", DeviceRegistration(platform="android",
                                                                    subscriber_key="bob@example.com"))
    group = make_group("Key customers", [alice])
    offer = Offer(app_id=push_app.id, name="Chocolate Week", deep_link="nibs://offers/1")
    db.session.add(offer)
    db.session.commit()
    return push_app, group, offer


def test_compose_send_to_group_and_tap_on_the_simulated_phone(page, live_app):
    _, group, offer = _simulated_audience(live_app)
    _sign_in(page, Role.MARKETER)
    page.goto(f"/compose/?offer_id={offer.id}")
    assert page.input_value("textarea[name=text]") == "Exclusive Offer: Chocolate Week"
    page.check("input[name=target][value=groups]")
    page.select_option("select[name=group_ids]", str(group.id))
    page.wait_for_function("document.querySelector('#compose-count strong')?.textContent === '1'")
    page.click("text=Review and confirm")
    page.wait_for_selector("#campaigns-confirm")
    assert "go to 1 device(s)" in page.inner_text("#campaigns-confirm")
    page.click("text=Send now to 1 devices")
    page.wait_for_selector("#campaigns-progress [data-status=sent]")
    assert "(100.0%)" in page.inner_text("#campaigns-progress")

    page.goto("/simulator/")
    page.click("text=sim-ios-alice")
    page.wait_for_selector(".wa-notification")
    assert "Exclusive Offer: Chocolate Week" in page.inner_text("#simulator-inbox")
    page.click(".wa-notification")
    page.wait_for_selector("#simulator-route")
    assert page.inner_text("#simulator-route") == "nibs://offers/1"
    page.click("#simulator-target")
    page.wait_for_url(f"**/offers/{offer.id}")
    assert "Chocolate Week" in page.inner_text("h1")
    db.session.expire_all()
    assert db.session.scalar(select(Campaign)).opened == 1
    assert page.console_errors == [], "\n".join(page.console_errors)


def test_progress_bar_follows_a_real_queue_worker_then_stops_polling(page, live_app):
    push_app, _, _ = _simulated_audience(live_app)
    live_app.config["QUEUE_IMMEDIATE"] = False
    init_queue(live_app)  # the instance's SQLite queue: the send is only queued until a consumer takes it
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Truffles are back"), actor="test")
    db.session.commit()
    polls: list[float] = []
    page.on("request", lambda r: r.headers.get("hx-target") == "campaigns-progress" and polls.append(time.monotonic()))
    _sign_in(page, Role.MARKETER)
    page.goto(f"/campaigns/{campaign.id}")
    page.click("text=Send now to 2 devices")
    page.wait_for_selector("#campaigns-progress [data-status=sending]")
    assert "0 / 2 (0.0%)" in page.inner_text("#campaigns-progress")
    page.wait_for_function(f"() => {{ return {len(polls)} < window.performance.getEntriesByType('resource')"
                           ".filter(e => e.name.endsWith('/campaigns/" + str(campaign.id) + "')).length }")
    assert page.locator("#campaigns-controls button:has-text('Pause')").count() == 1
    consumer = huey.create_consumer(workers=1, worker_type="thread", periodic=False)
    consumer.start()
    try:
        page.wait_for_selector("#campaigns-progress [data-status=sent]", timeout=20_000)
        assert "2 / 2 (100.0%)" in page.inner_text("#campaigns-progress")
        seen = len(polls)
        page.wait_for_timeout(2500)  # more than two poll intervals
        assert len(polls) == seen, "the fragment kept polling after the campaign was sent"
        assert page.get_attribute("#campaigns-progress", "hx-trigger") is None
        assert page.locator("#campaigns-controls button:has-text('Pause')").count() == 0  # controls followed
        assert page.locator("#campaigns-controls button:has-text('Cancel')").count() == 0
        assert page.inner_text("#campaigns-status-badge") == "sent"
    finally:
        consumer.stop(graceful=True)
    assert page.console_errors == [], "\n".join(page.console_errors)


def test_template_picker_fills_the_message_and_the_preview(page, live_app):
    _simulated_audience(live_app)
    db.session.add(Template(slug="welcome", title="Hi {{ name }}", body="Welcome to Nibs, {{ name }}!",
                            open_direct="nibs://home"))
    db.session.commit()
    _sign_in(page, Role.MARKETER)
    page.goto("/compose/")
    page.fill("textarea[name=template_context]", '{"name": "Ann"}')
    page.select_option("select[name=template_slug]", "welcome")
    page.wait_for_function("document.querySelector('textarea[name=text]').value === 'Welcome to Nibs, Ann!'")
    assert page.input_value("input[name=title]") == "Hi Ann"
    assert page.input_value("input[name=open_direct]") == "nibs://home"
    page.wait_for_function("document.querySelector('#compose-preview').innerText.includes('Welcome to Nibs, Ann!')")
    page.fill("textarea[name=template_context]", "{}")
    page.click("#compose-use-template")
    page.wait_for_selector("text='name' is undefined")
    assert page.input_value("textarea[name=text]") == "Welcome to Nibs, Ann!"  # refused: nothing overwritten
    assert page.console_errors == [], "\n".join(page.console_errors)


def test_schedule_then_cancel(page, live_app):
    push_app, _, _ = _simulated_audience(live_app)
    _sign_in(page, Role.MARKETER)
    page.goto("/compose/")
    page.fill("textarea[name=text]", "See you tomorrow")
    page.check("input[name=when][value=later]")
    page.fill("input[name=date]", (utcnow() + timedelta(days=1)).date().isoformat())
    page.fill("input[name=time]", "10:00")
    page.select_option("select[name=time_zone]", "Europe/Warsaw")
    page.click("text=Review and confirm")
    page.wait_for_selector("#campaigns-confirm")
    page.click("#campaigns-confirm button:has-text('Schedule')")
    page.wait_for_selector("#campaigns-progress [data-status=scheduled]")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#campaigns-controls button:has-text('Cancel')")
    page.wait_for_selector("#campaigns-progress [data-status=cancelled]")
    assert page.console_errors == []


def test_viewer_sees_no_send_buttons_and_forged_post_is_refused(page, live_app):
    push_app, _, _ = _simulated_audience(live_app)
    campaign = Campaign(app_id=push_app.id, text="draft", audience={"type": "all"})
    db.session.add(campaign)
    db.session.commit()
    _sign_in(page, Role.VIEWER)
    page.goto(f"/campaigns/{campaign.id}")
    assert page.locator("text=Send now").count() == 0
    assert page.locator("a:has-text('Compose')").count() == 0
    token = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']")
    forged = page.request.post(f"/campaigns/{campaign.id}/send", form={"csrf_token": token}, max_redirects=0)
    assert forged.status == 403
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).status == "draft"
