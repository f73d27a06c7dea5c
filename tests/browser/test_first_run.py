"""First run in a real browser: create the admin, sign in, see the dashboard, sign out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from webadmin.queue import huey, init_queue
from webadmin.services import demo_audience

pytestmark = pytest.mark.browser
DEMO_SUBSCRIBERS = 300  # the full 20,000 take half a minute; the button, the queue and the progress are tested here


@contextmanager
def _worker() -> Iterator[None]:
    """A queue consumer in this process, as `make run` has (one thread; no periodic tasks)."""
    consumer = huey.create_consumer(workers=1, worker_type="thread", periodic=False)
    consumer.start()
    try:
        yield
    finally:
        consumer.stop(graceful=True)


def _real_queue(live_app, monkeypatch) -> None:
    """The instance's SQLite queue instead of immediate mode: a click only queues the load until a worker runs."""
    monkeypatch.setattr(demo_audience, "DEMO_SUBSCRIBERS", DEMO_SUBSCRIBERS)
    live_app.config["QUEUE_IMMEDIATE"] = False
    init_queue(live_app)


def test_first_run_login_dashboard_logout(page, live_app, artifacts, monkeypatch):
    _real_queue(live_app, monkeypatch)
    page.goto("/")
    assert page.url.endswith("/setup")
    page.fill("input[name=email]", "owner@example.com")
    page.fill("input[name=password]", "a long admin password")
    page.fill("input[name=confirm]", "a long admin password")
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    assert page.locator("h1").inner_text() == "Dashboard"
    assert page.locator("text=Load demo data").count() == 1
    polls: list[float] = []
    page.on("request", lambda r: r.headers.get("hx-target") == "demo-load" and polls.append(time.monotonic()))
    page.click("text=Load demo data")
    page.wait_for_selector("#demo-load[data-status=queued]")
    assert "waiting for a queue worker" in page.inner_text("#demo-load")
    assert page.locator("#dashboard-empty >> text=Demo data is on its way").is_visible()
    assert page.locator("text=Load demo data").count() == 0  # one load at a time: no second button meanwhile
    page.wait_for_function(f"() => {len(polls)} < window.performance.getEntriesByType('resource')"
                           ".filter(e => e.name.endsWith('/demo/status')).length")  # it polls while queued
    with _worker():
        page.wait_for_selector("#demo-load[data-status=done]", timeout=60_000)
    assert f"Demo data loaded: {DEMO_SUBSCRIBERS} subscribers with" in page.inner_text("#demo-load")
    # The empty card below follows the polled block: no more "on its way" once it is done.
    assert page.locator("#dashboard-empty >> text=Demo data is in").is_visible()
    assert not page.locator("#dashboard-empty >> text=Demo data is on its way").is_visible()
    seen = len(polls)
    page.wait_for_timeout(2500)  # more than two poll intervals
    assert len(polls) == seen, "the fragment kept polling after the load was done"
    assert page.get_attribute("#demo-load", "hx-trigger") is None
    page.click("#demo-load >> text=Show the dashboard")
    page.wait_for_selector("#dashboard-kpis")
    assert page.locator("#dashboard-summary").is_visible() and page.locator("#demo-load-report").is_visible()
    page.click("text=Sign out")
    page.wait_for_url("**/login")
    page.fill("input[name=email]", "owner@example.com")
    page.fill("input[name=password]", "a long admin password")
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    page.goto("/users/")
    assert page.locator("#users-table").inner_text().count("owner@example.com") == 1
    assert page.console_errors == []


PHONE = {"width": 390, "height": 844}
SECTIONS = ["Dashboard", "Compose", "Campaigns", "Offers", "Audience", "Templates", "Analytics", "Settings", "Users"]


def _sign_in_as_admin(page) -> None:
    """Sign in through the form as a fresh admin."""
    from tests.factories import PASSWORD, make_user
    from webadmin.models.user import Role

    user = make_user(Role.ADMIN)
    page.goto("/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def _overflow(page) -> int:
    """How far the page is wider than the screen (0 or less: no sideways scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def _within_screen(box, width: int) -> bool:
    """Whether an element's box lies inside the screen's width."""
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width


def test_phone_width_layout(page, live_app, artifacts):
    page.set_viewport_size(PHONE)
    _sign_in_as_admin(page)
    assert _overflow(page) <= 0  # nothing is wider than the screen
    assert page.locator("nav.wa-nav").is_hidden()  # the one-row bar is for wide screens
    menu = page.locator("details.wa-menu > summary")
    assert menu.is_visible() and _within_screen(menu.bounding_box(), PHONE["width"])
    page.screenshot(path=str(artifacts / "dashboard-390px.png"), full_page=True)
    assert (artifacts / "dashboard-390px.png").stat().st_size > 1000
    menu.click()
    page.screenshot(path=str(artifacts / "dashboard-390px-menu.png"))
    links = page.locator(".wa-menu-panel a.nav-link")
    assert links.all_inner_texts() == SECTIONS
    # Every section is on the first screen once the menu is open, and each link really opens its page.
    for label in SECTIONS:
        if not page.locator("details.wa-menu").evaluate("el => el.open"):
            page.click("details.wa-menu > summary")
        link = page.locator(".wa-menu-panel a.nav-link", has_text=label)
        box = link.bounding_box()
        assert link.is_visible() and _within_screen(box, PHONE["width"]) and box["y"] + box["height"] <= 844, label
        href = link.get_attribute("href")
        link.click()
        page.wait_for_url(f"**{href}")
        assert page.locator("h1").first.is_visible(), label
        assert page.locator(".wa-menu-panel a.nav-link.active").text_content().strip() == label
        assert _overflow(page) <= 0, label
    assert page.console_errors == []


@pytest.mark.parametrize("width", [1200, 1440])
def test_wide_screens_show_every_section_in_one_row(page, live_app, artifacts, width):
    page.set_viewport_size({"width": width, "height": 800})
    _sign_in_as_admin(page)
    assert page.locator("details.wa-menu").is_hidden()
    links = page.locator("nav.wa-nav a.nav-link")
    assert links.all_inner_texts() == SECTIONS
    assert all(_within_screen(links.nth(i).bounding_box(), width) for i in range(len(SECTIONS)))
    assert _within_screen(page.locator("text=Sign out").bounding_box(), width)
    assert _overflow(page) <= 0
    page.screenshot(path=str(artifacts / f"dashboard-{width}px.png"))


def test_first_run_to_sign_out_without_javascript(browser, live_server):
    """Every step is a plain form or link: no htmx, no script, and the phone menu still opens."""
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False, viewport=PHONE)
    page = context.new_page()
    failures = []
    page.on("response", lambda r: r.status >= 400 and failures.append(f"{r.status} {r.url}"))
    try:
        page.goto("/")
        assert page.url.endswith("/setup")
        page.fill("input[name=email]", "owner@example.com")
        page.fill("input[name=password]", "a long admin password")
        page.fill("input[name=confirm]", "a long admin password")
        page.click("button[type=submit]")
        page.wait_for_url("**/")
        page.click("details.wa-menu > summary")  # <details> opens without JavaScript
        page.click(".wa-menu-panel >> text=Users")
        page.wait_for_url("**/users/")
        form = page.locator("#users-create")
        form.locator("input[name=email]").fill("viewer@example.com")
        form.locator("select[name=role]").select_option("viewer")
        form.locator("input[name=password]").fill("a long viewer password")
        form.locator("button[type=submit]").click()
        page.wait_for_url("**/users/")
        assert "Account viewer@example.com created." in page.locator("main").inner_text()
        assert page.locator("#users-table").inner_text().count("viewer@example.com") == 1
        page.click("text=Sign out")
        page.wait_for_url("**/login")
        assert "You are signed out." in page.locator("main").inner_text()
        page.fill("input[name=email]", "viewer@example.com")
        page.fill("input[name=password]", "a long viewer password")
        page.click("button[type=submit]")
        page.wait_for_url("**/")
        assert page.locator("h1").inner_text() == "Dashboard"
        page.click("text=Sign out")
        page.wait_for_url("**/login")
        page.goto("/users/")  # signed out for real: the console asks to sign in again
        assert "/login?next=/users/" in page.url
        assert failures == []
    finally:
        context.close()


def test_demo_load_without_javascript_shows_its_state_on_refresh(browser, live_server, live_app, monkeypatch):
    """No htmx: the button is a plain form, the dashboard shows the queued load, and its Refresh link the result."""
    from tests.factories import PASSWORD, make_user
    from webadmin.models.user import Role

    _real_queue(live_app, monkeypatch)
    admin = make_user(Role.ADMIN)
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    failures = []
    page.on("response", lambda r: r.status >= 400 and failures.append(f"{r.status} {r.url}"))
    try:
        page.goto("/login")
        page.fill("input[name=email]", admin.email)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/")
        page.click("text=Load demo data")
        page.wait_for_url("**/")
        assert page.locator("#demo-load").get_attribute("data-status") == "queued"
        with _worker():
            deadline = time.monotonic() + 60
            while page.locator("#demo-load").get_attribute("data-status") != "done":
                assert time.monotonic() < deadline, page.inner_text("#demo-load")
                page.wait_for_timeout(500)
                page.click("#demo-load-refresh")
                page.wait_for_url("**/")
        assert f"Demo data loaded: {DEMO_SUBSCRIBERS} subscribers with" in page.inner_text("#demo-load")
        assert page.locator("#dashboard-kpis").count() == 1
        assert failures == []
    finally:
        context.close()
