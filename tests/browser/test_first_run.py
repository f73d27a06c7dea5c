"""First run in a real browser: create the admin, sign in, see the dashboard, sign out."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_first_run_login_dashboard_logout(page, artifacts):
    page.goto("/")
    assert page.url.endswith("/setup")
    page.fill("input[name=email]", "owner@example.com")
    page.fill("input[name=password]", "a long admin password")
    page.fill("input[name=confirm]", "a long admin password")
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    assert page.locator("h1").inner_text() == "Dashboard"
    assert page.locator("text=Load demo data").count() == 1
    page.click("text=Sign out")
    page.wait_for_url("**/login")
    page.fill("input[name=email]", "owner@example.com")
    page.fill("input[name=password]", "a long admin password")
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    page.goto("/users/")
    assert page.locator("#users-table").inner_text().count("owner@example.com") == 1
    assert page.console_errors == []


def test_phone_width_layout(page, live_app, artifacts):
    from tests.factories import PASSWORD, make_user
    from webadmin.models.user import Role

    user = make_user(Role.ADMIN)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    # Nothing is wider than the screen: no sideways scrolling of the whole page.
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    assert page.locator("nav.wa-nav").is_visible()
    page.screenshot(path=str(artifacts / "dashboard-390px.png"), full_page=True)
    assert (artifacts / "dashboard-390px.png").stat().st_size > 1000
