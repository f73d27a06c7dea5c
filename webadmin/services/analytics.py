"""Analytics read models: tables (the numbers behind every chart, also its CSV) built from the rollups only.

No function here reads the messages table, so a page costs the same with a thousand messages or a million.
Hours are UTC hours (the rollups' grain) shown in the viewer's zone; a day is the viewer's calendar day, and an
hour belongs to the day in which it starts (in zones offset by a half hour, that is half an hour off midnight).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select

from webadmin.extensions import db
from webadmin.models.analytics import FAILURE_CLASSES, CampaignHourlyRollup, CampaignRollup, HourlyRollup
from webadmin.models.campaign import Campaign, CampaignStatus
from webadmin.models.offer import OFFER_KINDS, Offer
from webadmin.models.types import utcnow
from webadmin.services.campaigns import is_held
from webadmin.services.rollups import hour_of
from webadmin.services.subscriber_csv import csv_stream

RANGES = (7, 30, 90)  # days the charts can show
HOURLY_HOURS = 48  # the by-hour chart covers the last two days
CURVE_HOURS = 72  # a campaign's open curve shows its first three days hour by hour, then the rest in one row
RECENT_CAMPAIGNS = 8
FAILURE_LABELS = {"invalid_token": "invalid token", "quota": "quota", "auth": "auth", "payload": "payload",
                  "other": "other"}
PLATFORM_LABELS = {"android": "Android", "ios": "iOS", "web": "Web", "unknown": "unknown (device deleted)"}
SOURCE_LABELS = {"adhoc": "Ad hoc", "offer": "Offer", "social": "Social", "api": "API"}


def zone_named(name: str | None, default: str = "UTC") -> tuple[ZoneInfo, str | None]:
    """The zone of an IANA name, and a problem to show when the name is unknown (the default zone is used)."""
    if not name:
        return ZoneInfo(default), None
    try:
        if len(name) > 64:
            raise ValueError(name)
        return ZoneInfo(name), None
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default), f"Unknown time zone {name[:64]!r}: times are shown in {default}."


def rate(part: int, whole: int) -> str:
    """A share as the page and the CSV show it ("40.0%"), or "–" when there is nothing to divide by."""
    return f"{part / whole * 100:.1f}%" if whole else "–"


@dataclass
class Table:
    """Rows under a header: what a chart shows, rendered beside it and exported as CSV."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def column(self, name: str) -> list[Any]:
        """One column's values."""
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def csv(self) -> Iterator[str]:
        """The table as CSV (formula-like cells escaped)."""
        return csv_stream(self.columns, self.rows)

    @property
    def empty(self) -> bool:
        """No row, or nothing but zeros."""
        return not any(value for row in self.rows for value in row[1:] if isinstance(value, int))


@dataclass(frozen=True)
class Window:
    """The last `days` calendar days (today included) in a zone, as UTC hour bounds."""

    days: int
    zone: ZoneInfo
    first_day: date
    start: datetime  # the first UTC hour that starts on first_day (local)
    end: datetime  # now

    @classmethod
    def last(cls, days: int, zone: ZoneInfo, now: datetime | None = None) -> Window:
        """The window ending now."""
        now = now or utcnow()
        first_day = now.astimezone(zone).date() - timedelta(days=days - 1)
        return cls(days, zone, first_day, _first_hour_of(first_day, zone), now)

    def label(self) -> str:
        """"last 7 days" in words."""
        return "today" if self.days == 1 else f"the last {self.days} days"


def _first_hour_of(day: date, zone: ZoneInfo) -> datetime:
    """The first UTC hour starting on or after local midnight of `day`."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    floor = hour_of(midnight)
    return floor if floor == midnight else floor + timedelta(hours=1)


def _local(at: datetime, zone: ZoneInfo) -> str:
    """A time in the viewer's zone, to the minute."""
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M")


# ------------------------------------------------------------------------------------------ traffic (hourly)

_H = HourlyRollup.__table__
_SUMS = [func.coalesce(func.sum(_H.c[name]), 0) for name in ("sent", "failed", "opened")]


def _per_hour(start: datetime, end: datetime) -> dict[datetime, tuple[int, int, int]]:
    """hour → (sent, failed, opened), summed over platforms and sources."""
    rows = db.session.execute(
        select(_H.c.hour, *_SUMS).where(_H.c.hour >= start, _H.c.hour <= end).group_by(_H.c.hour)
    )
    return {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in rows}


def _offset_segments(window: Window) -> list[tuple[datetime, datetime, int]]:
    """(first hour, last hour, UTC offset in minutes): spans of the window in which the zone's offset is constant."""
    def offset(at: datetime) -> int:
        return int(at.astimezone(window.zone).utcoffset().total_seconds() // 60)  # type: ignore[union-attr]

    last, step = hour_of(window.end), timedelta(hours=1)
    segments: list[tuple[datetime, datetime, int]] = []
    start, current, day = window.start, offset(window.start), window.start
    while day <= last:  # a day at a time; hour by hour only through a day whose offset changes (a DST switch)
        following = min(day + timedelta(days=1), last + step)
        if offset(following) != current:
            hour = day
            while offset(hour) == current:
                hour += step
            if hour <= last:
                segments.append((start, hour - step, current))
                start, current = hour, offset(hour)
        day = following
    segments.append((start, last, current))
    return segments


def _per_day(window: Window) -> dict[date, tuple[int, int, int]]:
    """Local day → (sent, failed, opened), grouped in the database (at most one row per day is read)."""
    if db.engine.dialect.name == "postgresql":
        day = func.to_char(func.timezone(window.zone.key, _H.c.hour), "YYYY-MM-DD")
        parts = [(day, window.start, window.end)]
    else:  # SQLite has no zones: one query per span of constant UTC offset (DST switches split the window)
        parts = [(func.strftime("%Y-%m-%d", _H.c.hour, f"{minutes:+d} minutes"), first, last)
                 for first, last, minutes in _offset_segments(window)]
    days: dict[date, list[int]] = {}
    for day, first, last in parts:
        rows = db.session.execute(select(day, *_SUMS).where(_H.c.hour >= first, _H.c.hour <= last).group_by(day))
        for name, *counts in rows:
            totals = days.setdefault(date.fromisoformat(name), [0, 0, 0])
            for i, n in enumerate(counts):
                totals[i] += int(n)
    return {d: (s, f, o) for d, (s, f, o) in days.items()}


def daily(window: Window) -> Table:
    """Sends, final failures and opens per day of the window (days without traffic included, as zeros)."""
    counts = _per_day(window)
    days = {window.first_day + timedelta(days=i): counts.get(window.first_day + timedelta(days=i), (0, 0, 0))
            for i in range(window.days)}
    table = Table("daily", f"Sends and opens per day, {window.label()}",
                  ["Day", "Sent", "Failed", "Opened", "Open rate"])
    table.rows = [[day.isoformat(), s, f, o, rate(o, s)] for day, (s, f, o) in days.items()]
    return table


def hourly(zone: ZoneInfo, hours: int = HOURLY_HOURS, now: datetime | None = None) -> Table:
    """Sends, final failures and opens per hour of the last `hours` hours (the current one included)."""
    last = hour_of(now or utcnow())
    first = last - timedelta(hours=hours - 1)
    counts = _per_hour(first, last)
    table = Table("hourly", f"Sends and opens per hour, last {hours} hours", ["Hour", "Sent", "Failed", "Opened"])
    for i in range(hours):
        hour = first + timedelta(hours=i)
        table.rows.append([_local(hour, zone), *counts.get(hour, (0, 0, 0))])
    return table


def _by_platform_and_source(window: Window) -> list[tuple[str, str, int, int, int]]:
    """(platform, source, sent, failed, opened) of the window: one read of the rollups for both breakdowns."""
    rows = db.session.execute(
        select(_H.c.platform, _H.c.source, *_SUMS).where(_H.c.hour >= window.start, _H.c.hour <= window.end)
        .group_by(_H.c.platform, _H.c.source)
    )
    return [(p, s, int(sent), int(failed), int(opened)) for p, s, sent, failed, opened in rows]


def _breakdown(groups: list[tuple[str, str, int, int, int]], index: int, key: str, title: str, heading: str,
               labels: dict[str, str]) -> Table:
    """Traffic per platform (index 0) or source (index 1), busiest first."""
    totals: dict[str, list[int]] = {}
    for group in groups:
        counts = totals.setdefault(group[index], [0, 0, 0])
        for i in range(3):
            counts[i] += group[2 + i]
    table = Table(key, title, [heading, "Sent", "Failed", "Opened", "Open rate"])
    for value, (sent, failed, opened) in sorted(totals.items(), key=lambda item: (-item[1][0], item[0])):
        table.rows.append([labels.get(value, value), sent, failed, opened, rate(opened, sent)])
    return table


def by_platform_and_source(window: Window) -> tuple[Table, Table]:
    """Traffic per platform and per campaign source (ad hoc, offer, social, API)."""
    groups, period = _by_platform_and_source(window), window.label()
    return (_breakdown(groups, 0, "platforms", f"By platform, {period}", "Platform", PLATFORM_LABELS),
            _breakdown(groups, 1, "sources", f"By source, {period}", "Source", SOURCE_LABELS))


def by_platform(window: Window) -> Table:
    """Traffic per platform."""
    return by_platform_and_source(window)[0]


def by_source(window: Window) -> Table:
    """Traffic per campaign source (ad hoc, offer, social, API)."""
    return by_platform_and_source(window)[1]


def by_offer(window: Window) -> Table:
    """Sends and opens of pushes about each offer in the window (from the campaigns' hourly rollups)."""
    ch, c = CampaignHourlyRollup.__table__, Campaign.__table__
    rows = db.session.execute(
        select(c.c.related_id, func.count(func.distinct(c.c.id)), func.sum(ch.c.sent), func.sum(ch.c.opened))
        .join(c, c.c.id == ch.c.campaign_id)
        .where(ch.c.hour >= window.start, ch.c.hour <= window.end, c.c.related_type.in_(OFFER_KINDS))
        .group_by(c.c.related_id)
    ).all()
    ids = [int(r[0]) for r in rows if str(r[0]).isdigit()]
    names = dict(db.session.execute(select(Offer.id, Offer.name).where(Offer.id.in_(ids))).all()) if ids else {}
    table = Table("offers", f"By offer, {window.label()}", ["Offer", "Campaigns", "Sent", "Opened", "Open rate"])
    for related_id, campaigns, sent, opened in sorted(rows, key=lambda r: (-int(r[2]), str(r[0]))):
        name = names.get(int(related_id)) if str(related_id).isdigit() else None
        table.rows.append([name or f"offer {related_id} (deleted)", int(campaigns), int(sent), int(opened),
                           rate(int(opened), int(sent))])
    return table


# ------------------------------------------------------------------------------------------------ dashboard


@dataclass(frozen=True)
class Kpis:
    """Totals of a window."""

    window: Window
    sent: int
    failed: int
    opened: int
    campaigns: int

    @property
    def open_rate(self) -> str:
        """Opens per accepted push."""
        return rate(self.opened, self.sent)


def kpis(window: Window, days: Table | None = None) -> Kpis:
    """Sends, failures and opens of the window and the campaigns started in it. From `days` (a `daily` table of
    this window or a longer one ending the same day) when given, which saves reading the rollups again."""
    if days is None:
        sent, failed, opened = db.session.execute(
            select(*_SUMS).where(_H.c.hour >= window.start, _H.c.hour <= window.end)
        ).one()
    else:
        rows = [row for row in days.rows if row[0] >= window.first_day.isoformat()]
        sent, failed, opened = (sum(row[i] for row in rows) for i in (1, 2, 3))
    started = db.session.scalar(select(func.count(Campaign.id)).where(Campaign.started_at >= window.start)) or 0
    return Kpis(window, int(sent), int(failed), int(opened), started)


def home(zone: ZoneInfo, now: datetime | None = None) -> tuple[Table, list[Kpis]]:
    """The dashboard's numbers: the last 30 days per day, and the 7- and 30-day totals taken from them."""
    month = Window.last(30, zone, now)
    days = daily(month)
    return days, [kpis(Window.last(7, zone, month.end), days), kpis(month, days)]


def recent_campaigns(zone: ZoneInfo, limit: int = RECENT_CAMPAIGNS) -> tuple[Table, list[int]]:
    """The latest campaigns that went out (drafts excluded) with their counters; also their ids, for links."""
    campaigns = db.session.scalars(
        select(Campaign).where(Campaign.status != CampaignStatus.DRAFT.value).order_by(Campaign.id.desc()).limit(limit)
    ).all()
    table = Table("recent", "Recent campaigns",
                  ["Campaign", "Started", "Status", "Targeted", "Sent", "Failed", "Opened", "Open rate"])
    for c in campaigns:
        started = _local(c.started_at, zone) if c.started_at else "not yet"
        status = "held" if is_held(c) else c.status
        table.rows.append([c.title or c.text[:60], started, status, c.targeted, c.sent, c.failed, c.opened,
                           rate(c.opened, c.sent)])
    return table, [c.id for c in campaigns]


# ------------------------------------------------------------------------------------------------ campaigns


@dataclass(frozen=True)
class FunnelRow:
    """One stage: a count (or None: nobody knows) and its share, with a note."""

    stage: str
    count: int | None
    share: str = ""
    note: str = ""
    level: int = 0  # 1 = a part of the row above (failure classes)


# Sections that add funnel stages (SMS fallback, …) register a function here: campaign → rows, shown after the
# failures. The campaign page passes them to the funnel as `extra_rows`.
FUNNEL_EXTRAS: list[Callable[[Campaign], list[FunnelRow]]] = []


def funnel_extra_rows(campaign: Campaign) -> list[FunnelRow]:
    """The extra stages every registered section adds for this campaign."""
    return [row for extra in FUNNEL_EXTRAS for row in extra(campaign)]


@dataclass
class Funnel:
    """A campaign's funnel: the stages as rows (the table and the CSV), plus the chart's stages."""

    campaign: Campaign
    rollup: CampaignRollup
    rows: list[FunnelRow]

    @property
    def chart_stages(self) -> list[tuple[str, int, str]]:
        """Targeted → sent → opened, with the shares the table gives them. Device receipts stay in the table: they
        are only what apps reported, not a stage every opened message went through."""
        shares = {row.stage: row.share for row in self.rows}
        return [(stage, count, shares[stage]) for stage, count in (
            ("Targeted", self.campaign.targeted), ("Sent", self.rollup.sent), ("Opened", self.rollup.opened))]

    def table(self) -> Table:
        """The stages as a table."""
        return Table("funnel", "Funnel", ["Stage", "Messages", "Share", "Note"],
                     [[("– " if r.level else "") + r.stage, "unknown" if r.count is None else r.count, r.share,
                       r.note] for r in self.rows])


def funnel(campaign: Campaign, extra_rows: list[FunnelRow] | None = None) -> Funnel:
    """Targeted → sent → failed by reason → (extra stages) → delivered → opened, from the campaign's rollup."""
    rollup = db.session.get(CampaignRollup, campaign.id) or CampaignRollup(
        campaign_id=campaign.id, **{name: 0 for name in _ROLLUP_COUNTS})
    targeted, sent, failed = campaign.targeted, rollup.sent, rollup.failed
    rows = [
        FunnelRow("Targeted", targeted, rate(targeted, targeted), "devices the audience had when sending started"),
        FunnelRow("Sent", sent, rate(sent, targeted), "accepted by the provider"),
        FunnelRow("Failed", failed, rate(failed, targeted), "final failures; retries are not counted until they end"),
        *[FunnelRow(FAILURE_LABELS[name], getattr(rollup, f"failed_{name}"), rate(getattr(rollup, f"failed_{name}"),
                                                                                    targeted), level=1)
          for name in FAILURE_CLASSES],
    ]
    if campaign.cancelled:
        rows.append(FunnelRow("Cancelled", campaign.cancelled, rate(campaign.cancelled, targeted),
                              "not sent because the campaign was cancelled"))
    open_ = max(0, targeted - sent - failed - campaign.cancelled)
    if open_:
        rows.append(FunnelRow("Not final yet", open_, rate(open_, targeted), "waiting, being sent or retrying"))
    rows.extend(extra_rows or [])
    if rollup.received:
        rows.append(FunnelRow("Delivered to the device", rollup.received, rate(rollup.received, sent),
                              "reported by the app; the rest is unknown"))
    else:
        rows.append(FunnelRow("Delivered to the device", None, "", "no device reported receipt"))
    rows.append(FunnelRow("Opened", rollup.opened, rate(rollup.opened, sent), "open rate: opens per message sent"))
    return Funnel(campaign, rollup, rows)


_ROLLUP_COUNTS = ("sent", *(f"failed_{name}" for name in FAILURE_CLASSES), "opened", "received")


def open_curve(campaign: Campaign, zone: ZoneInfo) -> Table:
    """Opens per hour after sending started (the first CURVE_HOURS hours, then the rest), with the running rate."""
    table = Table("opens", "Opens after sending", ["Hour after sending", "Starting", "Opens", "Opens so far",
                                                   "Open rate so far"])
    if campaign.started_at is None:
        return table
    start = hour_of(campaign.started_at)
    ch = CampaignHourlyRollup.__table__
    rows = db.session.execute(select(ch.c.hour, ch.c.sent, ch.c.opened).where(ch.c.campaign_id == campaign.id))
    per_hour: dict[int, int] = {}
    sent = 0
    for hour, hour_sent, opened in rows:
        sent += hour_sent
        if opened:
            index = min(CURVE_HOURS, max(0, int((hour - start).total_seconds() // 3600)))
            per_hour[index] = per_hour.get(index, 0) + opened
    if not per_hour:
        return table
    total = 0
    for index in range(max(per_hour) + 1):
        total += per_hour.get(index, 0)
        label = f"{index}" if index < CURVE_HOURS else f"{CURVE_HOURS} and later"
        table.rows.append([label, _local(start + timedelta(hours=index), zone), per_hour.get(index, 0), total,
                           rate(total, sent)])
    return table
