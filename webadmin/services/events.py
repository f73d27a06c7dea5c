"""Device events (received, opened): idempotent, counted once per message; the campaign counter and the analytics
rollups move in the same transaction."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, column, select, update, values

from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.services.rollups import RollupBatch

EVENT_TYPES = ("received", "opened")


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One report from a device about one message: by the message's UUID, or (bulk routes, whose pushes carry
    only the campaign's UUID) by the campaign's UUID and the device's token."""

    message_uuid: str | None
    type: str
    at: datetime | None = None
    campaign_uuid: str | None = None
    device_token: str | None = None


@dataclass
class EventReport:
    """What a batch of events did."""

    counted: int = 0
    duplicates: int = 0
    unknown: list[str] = field(default_factory=list)
    unknown_devices: list[tuple[str, str]] = field(default_factory=list)  # (campaign UUID, device token)


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


def _target(row: Any) -> _Target:
    return _Target(row.id, row.campaign_id, row.platform, row.source or "adhoc", row.sent_at or row.created_at)


def _known(uuids: list[str], app_id: int | None) -> dict[str, _Target]:
    """uuid → target for messages of this app (any app when app_id is None)."""
    if not uuids:
        return {}
    # Core statements on the session's connection: the ORM's execute path costs more than these small queries.
    rows = db.session.connection().execute(_KNOWN, {"uuids": uuids})
    return {row.uuid: _target(row) for row in rows if app_id is None or row.app_id == app_id}


def _known_pairs(pairs: list[tuple[str, str]], app_id: int | None) -> dict[tuple[str, str], _Target]:
    """(campaign uuid, device token) → target: the campaign's message to the app's device with that token.

    The device must belong to the campaign's app (tokens are unique per app only), and the campaign to this app
    (any app when app_id is None). The pairs are a VALUES list joined through the unique indexes (campaign uuid,
    device app + token, message campaign + device): a row-value IN made SQLite scan the messages.
    """
    if not pairs:
        return {}
    m, c, d = Message.__table__, Campaign.__table__, Device.__table__
    wanted = values(column("campaign_uuid", String), column("token", String), name="pairs").data(pairs).cte("pairs")
    query = (
        select(wanted.c.campaign_uuid, wanted.c.token, m.c.id, m.c.campaign_id, m.c.sent_at, m.c.created_at,
               d.c.platform, c.c.source, c.c.app_id)
        .select_from(
            wanted.join(c, c.c.uuid == wanted.c.campaign_uuid)
            .join(d, (d.c.app_id == c.c.app_id) & (d.c.token == wanted.c.token))
            .join(m, (m.c.campaign_id == c.c.id) & (m.c.device_id == d.c.id))
        )
    )
    rows = db.session.connection().execute(query)
    return {(row.campaign_uuid, row.token): _target(row) for row in rows if app_id is None or row.app_id == app_id}


def _resolve(events: list[DeviceEvent], app_id: int | None,
             report: EventReport) -> list[tuple[DeviceEvent, _Target]]:
    """Each event with its message; unknown ones go to the report (each unknown UUID or pair once per event)."""
    by_uuid = _known(list({e.message_uuid for e in events if e.message_uuid is not None}), app_id)
    pairs = {(e.campaign_uuid, e.device_token) for e in events if e.message_uuid is None}
    by_pair = _known_pairs(sorted(pairs), app_id) if pairs else {}  # type: ignore[arg-type]
    resolved = []
    for event in events:
        if event.message_uuid is not None:
            target = by_uuid.get(event.message_uuid)
            if target is None:
                report.unknown.append(event.message_uuid)
                continue
        else:
            pair = (event.campaign_uuid or "", event.device_token or "")
            target = by_pair.get(pair)
            if target is None:
                report.unknown_devices.append(pair)
                continue
        resolved.append((event, target))
    return resolved


def _first_reports(resolved: list[tuple[DeviceEvent, _Target]], report: EventReport,
                   now: datetime) -> dict[tuple[str, datetime], list[_Target]]:
    """(type, when) → messages, one report per message and type; a device clock is trusted only between the
    send and now. Later reports of the same message in the batch (by either form) are duplicates."""
    seen: set[tuple[str, int]] = set()
    groups: dict[tuple[str, datetime], list[_Target]] = defaultdict(list)
    for event, target in resolved:
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
    resolved = _resolve(events, app_id, report)
    rollups, opened, connection = RollupBatch(), Counter[int](), db.session.connection()
    for (kind, at), targets in sorted(_first_reports(resolved, report, utcnow()).items()):
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
