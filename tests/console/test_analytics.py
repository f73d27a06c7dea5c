"""Analytics pages: exact counts on the page and in the CSV, time zones, empty states, and no message scans."""

from __future__ import annotations

import csv
import gzip
import io
import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from sqlalchemy import event, update

from tests.factories import make_app
from tests.known_campaign import run_known_campaign
from webadmin.extensions import db
from webadmin.models.analytics import HourlyRollup
from webadmin.models.campaign import Campaign
from webadmin.models.offer import Offer
from webadmin.models.types import utcnow
from webadmin.models.user import Role
from webadmin.services import campaigns
from webadmin.services.campaigns import CampaignDraft
from webadmin.services.rollups import hour_of


class _Tables(HTMLParser):
    """Every <table id=…> of a page as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.current: str | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self.current = attrs["id"]
            self.tables[self.current] = []
        elif tag == "tr" and self.current:
            self.tables[self.current].append([])
        elif tag in ("td", "th") and self.current:
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.current and self.cell is not None:
            self.tables[self.current][-1].append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def tables_of(html: str) -> dict[str, list[list[str]]]:
    """The page's tables (header row first)."""
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def csv_rows(response) -> list[list[str]]:
    """A CSV download's rows (header first)."""
    assert response.status_code == 200 and response.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))


def _number(cell: str) -> int | str:
    """A page cell as the CSV has it (thousands separators removed)."""
    return int(cell.replace(",", "")) if re.fullmatch(r"[\d,]+", cell) else cell


def _stage_counts(rows: list[list[str]]) -> dict[str, int | str]:
    """Funnel stage → count, from table or CSV rows."""
    return {row[0].lstrip("– "): _number(row[1]) for row in rows[1:]}


def _page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.get_data(as_text=True)


def test_the_campaign_page_and_its_csv_show_exactly_the_known_counts(app, client, login_as, monkeypatch):
    known = run_known_campaign(app, monkeypatch)
    expected, campaign = known.expected, known.campaign
    login_as(Role.VIEWER)
    page = _page(client, f"/campaigns/{campaign.id}")
    want = {"Targeted": expected["targeted"], "Sent": expected["sent"], "Failed": expected["failed"],
            "invalid token": 2, "quota": 1, "auth": 0, "payload": 1, "other": 1, "Delivered to the device": 2,
            "Opened": expected["opened"]}
    on_page = _stage_counts(tables_of(page)["table-funnel"])
    assert on_page == want
    funnel_csv = csv_rows(client.get(f"/analytics/campaigns/{campaign.id}/funnel.csv"))
    assert _stage_counts(funnel_csv) == want
    opened = next(row for row in funnel_csv if row[0] == "Opened")
    assert opened[2] == "40.0%"  # 4 opens of 10 sent, although the opens were reported 9 times
    curve = csv_rows(client.get(f"/analytics/campaigns/{campaign.id}/opens.csv"))
    assert curve[0] == ["Hour after sending", "Starting", "Opens", "Opens so far", "Open rate so far"]
    assert curve[-1][3:] == ["4", "40.0%"]
    assert tables_of(page)["table-opens"][-1][3:] == ["4", "40.0%"]


def test_delivery_is_unknown_when_no_device_reported_it(app, client, login_as, monkeypatch):
    known = run_known_campaign(app, monkeypatch)
    db.session.execute(text_update_received(known.campaign.id))
    db.session.commit()
    login_as(Role.VIEWER)
    rows = tables_of(_page(client, f"/campaigns/{known.campaign.id}"))["table-funnel"]
    delivered = next(row for row in rows if row[0] == "Delivered to the device")
    assert delivered[1:] == ["unknown", "", "no device reported receipt"]


def text_update_received(campaign_id: int):
    """As if no app had reported a receipt (the rollup is what the page reads)."""
    from webadmin.models.analytics import CampaignRollup

    return update(CampaignRollup).where(CampaignRollup.campaign_id == campaign_id).values(received=0)


def test_the_analytics_tables_match_the_traffic_and_their_csv(app, client, login_as, monkeypatch):
    known = run_known_campaign(app, monkeypatch)
    login_as(Role.VIEWER)
    tables = tables_of(_page(client, "/analytics/?days=7"))
    platforms = {row[0]: tuple(_number(c) for c in row[1:4]) for row in tables["table-platforms"][1:]}
    assert platforms == {"Android": known.by_platform["android"], "iOS": known.by_platform["ios"],
                         "Web": known.by_platform["web"]}
    assert tables["table-sources"][1][:5] == ["Ad hoc", "10", "5", "4", "40.0%"]
    daily = tables["table-daily"]
    assert len(daily) == 1 + 7 and sum(int(row[1]) for row in daily[1:]) == 10
    assert daily[-1][1:] == ["10", "5", "4", "40.0%"]  # today
    assert len(tables["table-hourly"]) == 1 + 48
    for key in ("daily", "hourly", "platforms", "sources", "offers"):
        exported = csv_rows(client.get(f"/analytics/{key}.csv?days=7"))
        assert [[str(_number(c)) for c in row] for row in tables[f"table-{key}"][1:]] == exported[1:] or \
            tables[f"table-{key}"][1][0] == "Nothing in this period."


def test_by_offer_and_formula_cells_are_escaped_in_the_csv(app, client, login_as, monkeypatch):
    known = run_known_campaign(app, monkeypatch)
    offer = Offer(app_id=known.campaign.app_id, name='=HYPERLINK("x")</script>')
    db.session.add(offer)
    db.session.flush()
    db.session.execute(update(Campaign).where(Campaign.id == known.campaign.id)
                       .values(related_type="offer", related_id=str(offer.id), title="+cmd|' /C calc'!A0"))
    db.session.commit()
    login_as(Role.VIEWER)
    offers = csv_rows(client.get("/analytics/offers.csv?days=7"))
    assert offers[1] == ["'=HYPERLINK(\"x\")</script>", "1", "10", "4", "40.0%"]
    recent = csv_rows(client.get("/analytics/recent.csv"))
    assert recent[1][0] == "'+cmd|' /C calc'!A0" and recent[1][3:7] == ["15", "10", "5", "4"]
    page = _page(client, "/analytics/?days=7")
    assert tables_of(page)["table-offers"][1][0] == '=HYPERLINK("x")</script>'
    # The name inside the figure's JSON data block cannot close the block.
    assert 'HYPERLINK(\\"x\\")\\u003c\\u002fscript\\u003e' in page and page.count("</script>") == page.count("<script")


def test_by_offer_counts_older_share_pushes_recorded_as_product(app, client, login_as, monkeypatch):
    known = run_known_campaign(app, monkeypatch)
    offer = Offer(app_id=known.campaign.app_id, name="Dark 70 bar", kind="product")
    db.session.add(offer)
    db.session.flush()
    # /share once recorded the item's kind; such campaigns still belong to their offer's row.
    db.session.execute(update(Campaign).where(Campaign.id == known.campaign.id)
                       .values(related_type="product", related_id=str(offer.id)))
    db.session.commit()
    login_as(Role.VIEWER)
    assert csv_rows(client.get("/analytics/offers.csv?days=7"))[1] == ["Dark 70 bar", "1", "10", "4", "40.0%"]


def test_the_dashboard_shows_kpis_recent_campaigns_and_a_daily_chart(app, client, login_as, monkeypatch):
    known = run_known_campaign(app, monkeypatch)
    login_as(Role.VIEWER)
    page = _page(client, "/")
    for days in (7, 30):
        block = page.split(f'id="kpis-{days}"', 1)[1].split("</div>\n  </div>", 1)[0]
        values = dict(re.findall(r'data-kpi="([a-z-]+)">([^<]+)<', block))
        assert values == {"sent": "10", "opened": "4", "open-rate": "40.0%", "failed": "5", "campaigns": "1"}
    tables = tables_of(page)
    assert tables["table-recent"][1][0] == "Treats" and tables["table-recent"][1][3:] == [
        "15", "10", "5", "4", "40.0%"]
    assert f'href="/campaigns/{known.campaign.id}"' in page
    assert 'data-chart="chart-daily-figure"' in page and "plotly.min.js?v=" in page
    assert "cdn" not in page.lower()


def test_the_dashboard_says_what_to_do_when_there_is_nothing_to_count(app, client, login_as):
    login_as(Role.MARKETER)
    assert 'id="dashboard-empty"' in _page(client, "/")
    draft = campaigns.create_campaign(CampaignDraft(app_id=make_app().id, text="Later"), actor="test")
    db.session.commit()
    page = _page(client, "/")
    assert 'id="dashboard-no-traffic"' in page and 'id="dashboard-kpis"' not in page
    assert "Compose a push" in page and "plotly" not in page
    assert 'id="dashboard-recent"' not in page  # a draft has not gone out
    assert draft.id


def test_times_follow_the_viewers_zone_and_bad_input_changes_nothing(app, client, login_as):
    login_as(Role.VIEWER)
    hour = hour_of(utcnow()) - timedelta(hours=3)
    db.session.add(HourlyRollup(hour=hour, platform="ios", source="api", sent=7, failed=0, opened=3, received=0))
    db.session.commit()
    india = tables_of(_page(client, "/analytics/?days=7&tz=Asia/Kolkata"))["table-hourly"]
    row = next(r for r in india[1:] if r[1] == "7")
    local = (hour + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%d %H:%M")
    assert row[0] == local and row[0].endswith(":30")
    assert client.get_cookie("wa_tz").value == "Asia/Kolkata"
    # The zone is remembered for the next page; a bad zone or period is said, and UTC / 30 days are shown.
    again = tables_of(_page(client, "/analytics/"))["table-hourly"]
    assert next(r for r in again[1:] if r[1] == "7")[0] == local
    bad = client.get("/analytics/?tz=Mars/Olympus&days=1000")
    text = bad.get_data(as_text=True)
    assert bad.status_code == 200 and "Unknown time zone &#39;Mars/Olympus&#39;" in text and "Choose 7, 30, 90" in text
    assert client.get_cookie("wa_tz").value == "Asia/Kolkata"  # unchanged
    assert len(tables_of(text)["table-daily"]) == 1 + 30
    assert client.get("/analytics/daily.csv?tz=../../etc/passwd").status_code == 200


def test_plotly_js_is_served_from_the_package(client, login_as):
    login_as(Role.VIEWER)
    response = client.get("/analytics/plotly.min.js?v=1")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert b"plotly" in response.data[:2000].lower() and len(response.data) > 1_000_000
    assert response.cache_control.max_age == 365 * 24 * 3600
    packed = client.get("/analytics/plotly.min.js?v=1", headers={"Accept-Encoding": "gzip, br"})
    assert packed.headers["Content-Encoding"] == "gzip" and gzip.decompress(packed.data) == response.data
    again = client.get("/analytics/plotly.min.js?v=1", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


def test_unknown_campaign_export_is_404(client, login_as):
    login_as(Role.VIEWER)
    assert client.get("/analytics/campaigns/999/funnel.csv").status_code == 404


@pytest.fixture
def statements(app):
    """SQL statements run while the test is in this fixture's list."""
    seen: list[str] = []
    listener = lambda conn, cursor, statement, *args: seen.append(statement)  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listener)
    yield seen
    event.remove(db.engine, "before_cursor_execute", listener)


def test_no_page_view_scans_the_messages_table(app, client, login_as, monkeypatch, statements):
    known = run_known_campaign(app, monkeypatch)
    login_as(Role.VIEWER)
    statements.clear()
    for url in ("/", "/analytics/", "/analytics/daily.csv", f"/analytics/campaigns/{known.campaign.id}/funnel.csv"):
        _page(client, url)
    assert [s for s in statements if "messages" in s] == []
    statements.clear()
    _page(client, f"/campaigns/{known.campaign.id}")
    touching = [" ".join(s.split()) for s in statements if "messages" in s]
    # Only the per-message log, one page of it by campaign (indexed), reads message rows.
    assert len(touching) == 1 and "WHERE messages.campaign_id =" in touching[0] and "LIMIT" in touching[0]


def test_demo_history_gives_the_charts_weeks_of_data_that_a_rebuild_confirms(app, client, login_as):
    from tests.sending.test_rollups import _snapshot
    from webadmin.services import demo, rollups

    demo.load(actor="test")
    live = _snapshot()
    rollups.rebuild()
    assert _snapshot() == live
    login_as(Role.VIEWER)
    page = _page(client, "/")
    assert 'id="dashboard-kpis"' in page and 'id="dashboard-recent"' in page
    tables = tables_of(_page(client, "/analytics/?days=90"))
    busy_days = [row for row in tables["table-daily"][1:] if row[1] != "0"]
    assert len(busy_days) >= 15  # a campaign every few days over six weeks
    assert {row[0] for row in tables["table-sources"][1:]} == {"Ad hoc", "Offer", "Social", "API"}
    assert len(tables["table-offers"]) > 2 and {row[0] for row in tables["table-platforms"][1:]} == {
        "Android", "iOS", "Web"}


@pytest.mark.parametrize("zone_name", ["Europe/Warsaw", "America/New_York", "Asia/Kolkata"])
def test_days_are_the_viewers_days_across_a_dst_switch(app, zone_name):
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from webadmin.services.analytics import Window, daily

    zone, now = ZoneInfo(zone_name), datetime(2026, 11, 22, 8, 30, tzinfo=UTC)
    window = Window.last(90, zone, now)
    expected: dict[str, int] = {}
    hour = window.start - timedelta(hours=30)  # some traffic before the window, which must not count
    while hour <= now:
        sent = hour.hour + 1
        db.session.add(HourlyRollup(hour=hour, platform="android", source="adhoc", sent=sent, failed=0, opened=0,
                                    received=0))
        if hour >= window.start:
            day = hour.astimezone(zone).date().isoformat()
            expected[day] = expected.get(day, 0) + sent
        hour += timedelta(hours=5)
    db.session.commit()
    table = daily(window)
    assert len(table.rows) == 90 and table.rows[-1][0] == now.astimezone(zone).date().isoformat()
    assert {row[0]: row[1] for row in table.rows if row[1]} == expected


def test_every_figure_is_a_valid_plotly_figure(app, client, login_as, monkeypatch):
    """The pages serialise figure dictionaries without building plotly objects: here plotly validates them all."""
    import json

    import plotly.graph_objects as go

    known = run_known_campaign(app, monkeypatch)
    login_as(Role.VIEWER)
    figures = {}
    for url in ("/", f"/campaigns/{known.campaign.id}", "/analytics/?days=7"):
        page = _page(client, url)
        figures.update(re.findall(r'<script type="application/json" id="(chart-[a-z]+-figure)">(.*?)</script>', page,
                                  re.S))
    assert set(figures) == {f"chart-{key}-figure" for key in ("daily", "funnel", "opens", "hourly", "platforms",
                                                              "sources", "offers")}
    for key, data in figures.items():
        figure = go.Figure(json.loads(data))  # raises ValueError on any property plotly does not know
        assert figure.data, key
