"""Device events (received, opened): idempotent, counted once per message; the campaign counter and the analytics
rollups move in the same transaction."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update

from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.services.rollups import RollupBatch

EVENT_TYPES = ("received", "opened")


@dataclass(frozen=True)
class DeviceEvent:
    """One report from a device about one message (by UUID)."""

    message_uuid: str
    type: str
    at: datetime | None = None


@dataclass
class EventReport:
    """What a batch of events did."""

    counted: int = 0
    duplicates: int = 0
    unknown: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Target:
    """A reported message: its ids, where it counts in the rollups, and the earliest time an event can have."""

    id: int
    campaign_id: int | None
    platform: str | None
    source: str
    earliest: datetime


def _known_query() -> Any:
    """The reported messages with their app and what the rollups need (built once: this runs on every request).

    The app is checked on the rows, not in the WHERE clause: given `campaigns.app_id = ?`, SQLite (without
    statistics) starts from the app's campaigns and walks all their messages instead of looking the UUIDs up.
    """
    m, c, d = Message.__table__, Campaign.__table__, Device.__table__
    return (
        select(m.c.uuid, m.c.id, m.c.campaign_id, m.c.sent_at, m.c.created_at, d.c.platform, c.c.source, c.c.app_id)
        .select_from(m.outerjoin(c, c.c.id == m.c.campaign_id).outerjoin(d, d.c.id == m.c.device_id))
        .where(m.c.uuid.in_(bindparam("uuids", expanding=True)))
    )


_KNOWN = _known_query()


def _known(uuids: list[str], app_id: int | None) -> dict[str, _Target]:
    """uuid → target for messages of this app (any app when app_id is None)."""
    # Core statements on the session's connection: the ORM's execute path costs more than these small queries.
    rows = db.session.connection().execute(_KNOWN, {"uuids": uuids})
    return {
        row.uuid: _Target(row.id, row.campaign_id, row.platform, row.source or "adhoc", row.sent_at or row.created_at)
        for row in rows if app_id is None or row.app_id == app_id
    }


def _first_reports(events: list[DeviceEvent], known: dict[str, _Target], report: EventReport,
                   now: datetime) -> dict[tuple[str, datetime], list[_Target]]:
    """(type, when) → messages, one report per message and type; a device clock is trusted only between the
    send and now. Later reports of the same message in the batch are duplicates, unknown UUIDs are listed."""
    seen: set[tuple[str, int]] = set()
    groups: dict[tuple[str, datetime], list[_Target]] = defaultdict(list)
    for event in events:
        target = known.get(event.message_uuid)
        if target is None:
            report.unknown.append(event.message_uuid)
            continue
        if (event.type, target.id) in seen:
            report.duplicates += 1
            continue
        seen.add((event.type, target.id))
        at = min(max(event.at or now, target.earliest), now)
        groups[event.type, at].append(target)
    return groups


def _mark_statement(column: str) -> Any:
    """Set a message's opened_at or received_at if still empty; returns the ids it changed (built once).

    The IS NULL guard makes a report idempotent across requests too: of two racing reports, one changes the row.
    An event is no change of the message's state, so changed_at stays (final failures are counted by it).
    """
    m = Message.__table__
    return (
        update(m)
        .where(m.c.id.in_(bindparam("ids", expanding=True)), m.c[column].is_(None))
        .values({column: bindparam("at", type_=m.c[column].type), "changed_at": m.c.changed_at})
        .returning(m.c.id)
    )


_MARK = {"opened": _mark_statement("opened_at"), "received": _mark_statement("received_at")}
_c = Campaign.__table__
_BUMP_OPENED = update(_c).where(_c.c.id == bindparam("b_id")).values(opened=_c.c.opened + bindparam("n"))


def record_events(events: list[DeviceEvent], *, app_id: int | None) -> EventReport:
    """Record events; an open (or a receipt) counts once per message however often it is reported."""
    report = EventReport()
    known = _known(list({e.message_uuid for e in events}), app_id)
    rollups, opened, connection = RollupBatch(), Counter[int](), db.session.connection()
    for (kind, at), targets in sorted(_first_reports(events, known, report, utcnow()).items()):
        by_id = {t.id: t for t in targets}
        counted = connection.execute(_MARK[kind], {"ids": sorted(by_id), "at": at}).scalars().all()
        report.counted += len(counted)
        report.duplicates += len(targets) - len(counted)
        _count(rollups, opened, kind, at, [by_id[i] for i in counted])
    if opened:
        connection.execute(_BUMP_OPENED, [{"b_id": cid, "n": n} for cid, n in sorted(opened.items())])
    rollups.write()
    db.session.commit()
    return report


def _count(rollups: RollupBatch, opened: Counter[int], kind: str, at: datetime, targets: list[Any]) -> None:
    """Add counted events to the rollups and the campaigns' open counters."""
    for target in targets:
        if target.campaign_id is None:
            continue
        rollups.add(target.campaign_id, target.source, target.platform, at, kind)
        if kind == "opened":
            opened[target.campaign_id] += 1
