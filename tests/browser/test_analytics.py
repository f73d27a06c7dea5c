"""The dashboard, a campaign page and the analytics page draw their plotly charts in Chromium, without console
errors, and each chart shows the numbers of the table beside it (and of the funnel)."""

from __future__ import annotations

import threading

import pytest

from tests.factories import PASSWORD, make_user
from tests.known_campaign import KnownCampaign, run_known_campaign
from webadmin.models.user import Role

pytestmark = pytest.mark.browser


def _known_campaign(live_app, monkeypatch) -> KnownCampaign:
    """Send the known campaign on another thread: Playwright's sync API keeps an event loop registered on this one,
    and the engine runs its own."""
    done: list[KnownCampaign | BaseException] = []

    def run() -> None:
        with live_app.app_context():
            try:
                done.append(run_known_campaign(live_app, monkeypatch))
            except BaseException as exc:  # noqa: BLE001 — re-raised on the test's thread
                done.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if isinstance(done[0], BaseException):
        raise done[0]
    return done[0]


def _sign_in(page, role):
    user = make_user(role)
    page.goto("/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def _drawn(page, key: str) -> dict:
    """Wait for plotly to draw a chart; its traces (x, y) as plotly holds them."""
    page.wait_for_selector(f'#chart-{key} .js-plotly-plot .main-svg')
    return page.evaluate(
        """key => document.querySelector(`[data-chart="chart-${key}-figure"]`).data
                  .map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))""", key)


def _table(page, key: str) -> list[list[str]]:
    """A table's body rows as cell texts."""
    return page.eval_on_selector_all(f"#table-{key} tbody tr",
                                     "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))")


def test_dashboard_and_campaign_page_draw_charts_that_match_their_tables(page, live_app, monkeypatch, artifacts):
    known = _known_campaign(live_app, monkeypatch)
    _sign_in(page, Role.VIEWER)

    page.goto("/")
    daily = _drawn(page, "daily")
    table = _table(page, "daily")
    sent = next(t for t in daily if t["name"] == "Sent")
    assert sent["x"] == [row[0] for row in table] and sent["y"] == [int(row[1]) for row in table]
    assert sum(sent["y"]) == known.expected["sent"]
    assert page.inner_text('#kpis-7 [data-kpi="sent"]') == str(known.expected["sent"])
    assert page.inner_text('#kpis-30 [data-kpi="open-rate"]') == "40.0%"
    page.screenshot(path=str(artifacts / "analytics-dashboard.png"), full_page=True)

    page.click(f'#dashboard-recent a[href="/campaigns/{known.campaign.id}"]')
    page.wait_for_url(f"**/campaigns/{known.campaign.id}")
    funnel = _drawn(page, "funnel")[0]
    stages = {row[0].lstrip("– "): row[1] for row in _table(page, "funnel")}
    # The chart's stages are the table's numbers; the table's are the campaign's known outcome.
    assert funnel["y"] == ["Targeted", "Sent", "Opened"]
    assert funnel["x"] == [int(stages[s]) for s in ("Targeted", "Sent", "Opened")]
    assert funnel["x"] == [known.expected[k] for k in ("targeted", "sent", "opened")]
    assert stages["Delivered to the device"] == str(known.expected["received"])  # reported receipts: table only
    assert [int(stages[s]) for s in ("invalid token", "quota", "auth", "payload", "other")] == [2, 1, 0, 1, 1]
    curve = _drawn(page, "opens")
    assert curve[0]["y"] == [int(row[2]) for row in _table(page, "opens")] and sum(curve[0]["y"]) == 4
    assert page.inner_text("#count-opened") == "4"  # the live progress counters agree with the funnel
    page.screenshot(path=str(artifacts / "analytics-campaign.png"), full_page=True)

    page.goto("/analytics/?days=7")
    for key in ("daily", "hourly", "platforms", "sources", "offers"):
        traces = _drawn(page, key)
        rows = _table(page, key)
        if rows and rows[0][0] != "Nothing in this period.":
            assert traces[0]["x"] == [row[0] for row in rows], key
    platforms = {t["name"]: dict(zip(t["x"], t["y"], strict=True)) for t in _drawn(page, "platforms")}
    assert platforms["Sent"] == {"Android": 7, "iOS": 3, "Web": 0} and platforms["Opened"]["iOS"] == 2
    assert page.console_errors == []


def test_the_browser_zone_is_used_without_asking(browser, live_server, live_app, monkeypatch):
    _known_campaign(live_app, monkeypatch)
    context = browser.new_context(base_url=live_server.url, timezone_id="Asia/Kolkata")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _sign_in(page, Role.VIEWER)
    page.goto("/analytics/")
    page.wait_for_selector("#chart-hourly .js-plotly-plot")
    # Reloaded once in the browser's zone (Chromium names it by its older alias).
    assert page.input_value("input[name=tz]") in ("Asia/Kolkata", "Asia/Calcutta")
    assert all(row[0].endswith(":30") for row in _table(page, "hourly"))
    assert errors == []
    context.close()
