"""An admin adds a OneSignal channel (pointed at a local fake) in a real browser and tests its connection."""

from __future__ import annotations

import pytest

from tests.factories import PASSWORD, make_app, make_user
from tests.providers.fakes import ThreadedFake, reply
from webadmin.models.user import Role

pytestmark = pytest.mark.browser
API_KEY = "os-key-browser-7d1c9e0a4b2f"


def _sign_in(page, role: Role) -> None:
    user = make_user(role)
    page.goto("/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def test_admin_adds_a_onesignal_channel_and_tests_the_connection(page, live_app, artifacts):
    nibs = make_app("Nibs")
    _sign_in(page, Role.ADMIN)
    with ThreadedFake() as fake:
        fake.route("GET", "/notifications", reply({"total_count": 0, "offset": 0, "limit": 1, "notifications": []}))
        page.goto(f"/settings/apps/{nibs.id}")
        assert page.locator("#settings-platform-android-route").inner_text().endswith("Debug (nothing is sent)")
        page.click("#channel-add")
        page.select_option("select[name=platform]", "android")
        page.select_option("select[name=backend]", "onesignal")
        page.click("button:has-text('Continue')")
        page.fill("input[name=name]", "OneSignal (fake)")
        page.fill("input[name=cred_app_id]", "5eb5a37e-b458-11e3-ac11-000c2940e62c")
        page.fill("input[name=cred_api_key]", API_KEY)
        page.click("summary:has-text('Advanced options')")
        page.fill("input[name=option_endpoint]", fake.url)
        page.click("button:has-text('Add channel')")
        page.wait_for_url(f"**/settings/apps/{nibs.id}*")
        assert "Channel OneSignal (fake) added" in page.locator("main").inner_text()
        assert "OneSignal (fake)" in page.locator("#settings-platform-android-route").inner_text()

        channel = page.locator("#settings-platform-android li[id^=settings-channel-]").first
        channel.locator("button:has-text('Test connection')").click()
        result = page.locator("[id$=-result]")
        result.wait_for()
        assert "Test connection succeeded" in result.inner_text()
        assert "OneSignal accepted the app id and API key" in result.inner_text()
        assert len(fake.calls("/notifications", "GET")) == 1
    assert API_KEY not in page.content()
    page.screenshot(path=str(artifacts / "settings-channels.png"), full_page=True)
    assert page.console_errors == []
