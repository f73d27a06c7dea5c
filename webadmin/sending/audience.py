"""Audience resolution: one query for counting and for materialising messages, so they never disagree."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Select,
    String,
    and_,
    cast,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from webadmin.extensions import db
from webadmin.models.app import PLATFORMS
from webadmin.models.audience import Device, GroupMember, Subscriber
from webadmin.models.campaign import Campaign
from webadmin.models.message import DEVICE_LOCK, Message, MessageState
from webadmin.models.types import UTCDateTime, utcnow
from webadmin.services import ServiceError

# "devices" names devices by id: the compose page's test sends to chosen test devices.
AUDIENCE_TYPES = ("all", "keys", "groups", "platforms", "devices")
MAX_KEYS = 100_000
MAX_DEVICE_IDS = 100


@dataclass(frozen=True)
class AudienceSpec:
    """Who a campaign targets; `platforms` also filters keys and groups."""

    type: str = "all"
    keys: tuple[str, ...] = ()
    group_ids: tuple[int, ...] = ()
    platforms: tuple[str, ...] = field(default_factory=tuple)
    device_ids: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AudienceSpec:
        """Validate a stored or submitted spec; ServiceError on anything odd."""
        kind = raw.get("type", "all")
        if kind not in AUDIENCE_TYPES:
            raise ServiceError(f"Unknown audience type {kind!r}.", field="audience")
        platforms = tuple(dict.fromkeys(raw.get("platforms") or ()))
        if any(p not in PLATFORMS for p in platforms):
            raise ServiceError("Platforms must be android, ios or web.", field="platforms")
        keys = tuple(dict.fromkeys(str(k).strip().lower() for k in raw.get("keys") or () if str(k).strip()))
        group_ids = tuple(dict.fromkeys(int(g) for g in raw.get("group_ids") or ()))
        device_ids = tuple(dict.fromkeys(int(d) for d in raw.get("device_ids") or ())) if kind == "devices" else ()
        spec = cls(kind, keys, group_ids, platforms, device_ids)
        spec.check()
        return spec

    def check(self) -> None:
        """Each type needs its own targets."""
        if self.type == "keys" and not self.keys:
            raise ServiceError("Paste at least one subscriber key.", field="keys")
        if len(self.keys) > MAX_KEYS:
            raise ServiceError(f"At most {MAX_KEYS:,} subscriber keys per campaign.", field="keys")
        if self.type == "groups" and not self.group_ids:
            raise ServiceError("Choose at least one group.", field="groups")
        if self.type == "platforms" and not self.platforms:
            raise ServiceError("Choose at least one platform.", field="platforms")
        if self.type == "devices" and not 0 < len(self.device_ids) <= MAX_DEVICE_IDS:
            raise ServiceError(f"Choose 1 to {MAX_DEVICE_IDS} devices.", field="device_ids")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form stored on the campaign."""
        spec = {
            "type": self.type,
            "keys": list(self.keys),
            "group_ids": list(self.group_ids),
            "platforms": list(self.platforms),
        }
        if self.type == "devices":
            spec["device_ids"] = list(self.device_ids)
        return spec


def _json_values(values: list[Any]) -> Any:
    """A one-column table of the given values from a single bound JSON parameter (any list size)."""
    if db.engine.dialect.name == "postgresql":
        return func.jsonb_array_elements_text(literal(values, JSONB)).table_valued("value")
    return func.json_each(literal(json.dumps(values))).table_valued("value")


def _newest_device_only(d: Any, platforms: tuple[str, ...]) -> ColumnElement[bool]:
    """Loymax "only the most recently registered device": anonymous devices are kept as they are."""
    d2 = Device.__table__.alias("newest")
    newest = (
        select(d2.c.id)
        .where(d2.c.subscriber_id == d.c.subscriber_id, d2.c.app_id == d.c.app_id, d2.c.status == "active")
        .order_by(d2.c.registered_at.desc(), d2.c.id.desc())
        .limit(1)
    )
    if platforms:
        newest = newest.where(d2.c.platform.in_(platforms))
    return or_(d.c.subscriber_id.is_(None), d.c.id == newest.scalar_subquery())


def _target_filter(spec: AudienceSpec, d: Any, s: Any) -> ColumnElement[bool]:
    """The part of the WHERE clause that depends on the audience type."""
    if spec.type == "keys":
        keys = _json_values(list(spec.keys))
        return s.c.subscriber_key.in_(select(cast(keys.c.value, String)))
    if spec.type == "groups":
        gm = GroupMember.__table__
        return d.c.subscriber_id.in_(select(gm.c.subscriber_id).where(gm.c.group_id.in_(spec.group_ids)))
    if spec.type == "devices":
        return d.c.id.in_(spec.device_ids)
    return true()


def audience_select(app_id: int, spec: AudienceSpec, device_selection: str = "all") -> Select:
    """(device_id, recipient) of every device the campaign would reach, without duplicates.

    Skips invalid and unsubscribed devices and opted-out subscribers.
    """
    d, s = Device.__table__, Subscriber.__table__
    by_subscriber = spec.type in ("keys", "groups")
    app_column, status_column = d.c.app_id, d.c.status
    if by_subscriber and db.engine.dialect.name == "sqlite":
        # Keys and groups reach few devices: start from their subscribers. SQLite, which has no statistics, would
        # otherwise walk every device of the app by (app_id, status) and check each (2 s for one key among 1M
        # devices); `+ 0` and `|| ''` give it no index on those columns, so it looks the subscribers' devices up.
        app_column, status_column = d.c.app_id + 0, d.c.status + ""
    conditions = [
        app_column == app_id,
        status_column == "active",
        or_(d.c.subscriber_id.is_(None), s.c.opted_out.is_(False)),
        _target_filter(spec, d, s),
    ]
    if by_subscriber:
        conditions.append(d.c.subscriber_id.is_not(None))
    if spec.platforms:
        conditions.append(d.c.platform.in_(spec.platforms))
    if device_selection == "newest" and spec.type != "devices":  # chosen devices are meant one by one
        conditions.append(_newest_device_only(d, spec.platforms))
    # Keys and groups only reach subscribers' devices, so an inner join says the same and can start from them.
    joined = d.join(s, s.c.id == d.c.subscriber_id) if by_subscriber else d.outerjoin(s, s.c.id == d.c.subscriber_id)
    return (
        select(d.c.id.label("device_id"), s.c.subscriber_key.label("recipient"))
        .select_from(joined)
        .where(and_(*conditions))
    )


def count_audience(app_id: int, spec: AudienceSpec, device_selection: str = "all") -> int:
    """How many messages a campaign with this audience would create (the compose page's count)."""
    query = audience_select(app_id, spec, device_selection).subquery()
    return db.session.scalar(select(func.count()).select_from(query)) or 0


# A message's UUID is derived from its campaign's and its device's: the first 64 bits of the campaign's (random)
# UUID with the version nibble set to 8 (RFC 9562 "custom"), then the RFC 4122 variant bits 10 and the device id in
# the remaining 62 bits: cccccccc-cccc-8ccc-8ddd-dddddddddddd. It is unique per (campaign, device) like the row,
# the same again if a campaign were materialised twice, and the messages of one campaign insert in device order at
# one place of the uuid index instead of at random places (most of the cost of materialising with random UUIDs).
# Two campaigns whose UUIDs agree in those 60 random bits (for n campaigns, p ≈ n²/2⁶¹) and that share a device
# would collide on uq_messages_uuid: the second start fails and can be retried as a new campaign.
_VARIANT = 1 << 63
_LOW_48 = (1 << 48) - 1


def campaign_uuid_prefix(campaign_uuid: str) -> str:
    """The part every message UUID of a campaign shares: `cccccccc-cccc-8ccc`."""
    return f"{campaign_uuid[:14]}8{campaign_uuid[15:18]}"


def message_uuid(campaign_uuid: str, device_id: int) -> str:
    """The UUID of the campaign's message to a device (what `materialize` computes in SQL)."""
    low = _VARIANT | device_id
    return f"{campaign_uuid_prefix(campaign_uuid)}-{low >> 48:04x}-{low & _LOW_48:012x}"


def _uuid_sql(campaign_uuid: str, device_id: Any) -> Any:
    """`message_uuid` as a SQL expression over the device id column."""
    prefix = campaign_uuid_prefix(campaign_uuid)
    if db.engine.dialect.name == "postgresql":
        device_id = cast(device_id, BigInteger)
    high = literal_column(str(_VARIANT >> 48)).op("|")(device_id.op(">>")(literal_column("48")))
    low = device_id.op("&")(literal_column(str(_LOW_48)))
    if db.engine.dialect.name == "postgresql":
        return literal(prefix + "-") + _hex(high, 4) + "-" + _hex(low, 12)
    return func.printf("%s-%04x-%012x", prefix, high, low)


def _hex(value: Any, width: int) -> Any:
    """PostgreSQL: an integer as `width` lowercase hex digits."""
    return func.lpad(func.to_hex(value), width, "0")


# SQLite page cache (KiB) while one statement writes a whole audience; the connection's own size comes back after.
BULK_CACHE_KIB = 64 * 1024


@contextmanager
def _bulk_write_cache() -> Iterator[None]:
    """SQLite: a larger page cache for one bulk statement.

    Every message adds an entry to seven indexes of `messages`; with the default 2 MiB cache the pages written at
    several places at once (device_id puts each entry next to older campaigns' ones) are evicted and read back
    (1M messages: about 0.5 s more than with this cache).
    """
    if db.engine.dialect.name != "sqlite":
        yield
        return
    previous = db.session.execute(text("PRAGMA cache_size")).scalar()
    db.session.execute(text(f"PRAGMA cache_size = -{BULK_CACHE_KIB}"))
    try:
        yield
    finally:
        db.session.execute(text(f"PRAGMA cache_size = {int(previous)}"))


def materialize(campaign_id: int, app_id: int, spec: AudienceSpec, device_selection: str, tag: str | None,
                *, analyze: bool = True, values: Callable[[Any], dict[str, Any]] | None = None) -> int:
    """Create one WAITING message per target device with a single INSERT … SELECT; returns the count.

    Two knobs for the demo loader, which writes past campaigns that nobody sends: `values(audience)` gives column
    expressions (over the audience subquery's device_id and recipient) that replace or add to the defaults, so the
    rows are written once in their final state; analyze=False leaves PostgreSQL's statistics to the caller."""
    audience = audience_select(app_id, spec, device_selection).subquery()
    m = Message.__table__
    # FOR KEY SHARE (PostgreSQL): a deletion of the campaign waits for this transaction.
    locked = select(Campaign.uuid).where(Campaign.id == campaign_id).with_for_update(key_share=True)
    campaign_uuid = db.session.scalar(locked)
    if campaign_uuid is None:  # deleted meanwhile: nothing may reference it (models.message.PARENT_TRIGGERS_DDL)
        raise ServiceError("The campaign no longer exists.", code="not_found")
    exprs: dict[str, Any] = {
        "uuid": _uuid_sql(campaign_uuid, audience.c.device_id),
        "campaign_id": literal(campaign_id),
        "device_id": audience.c.device_id,
        "recipient": audience.c.recipient,
        "state": literal(MessageState.WAITING.value),
        "number_of_send_attempts": literal(0),
        "retry_sending": literal(True),
        "created_at": literal(utcnow(), UTCDateTime),
        "tag": literal(tag, String),
    }
    if values is not None:
        exprs.update(values(audience))
    rows = select(*exprs.values())
    if db.engine.dialect.name == "sqlite" and spec.type in ("all", "platforms"):
        # In device order every index of `messages` but device_id is appended to, not written at random places, and
        # ix_devices_audience yields an app's devices in that order (no sort). Keys and groups are looked up from
        # their subscribers instead (an ORDER BY would make SQLite walk all the app's devices for them). PostgreSQL's
        # sequential scan of devices is already close to id order, and sorting a million rows costs it more.
        rows = rows.order_by(audience.c.device_id)
    columns = list(exprs)
    if db.engine.dialect.name == "postgresql":
        # Until commit, a device of this app being deleted waits for these messages, then nulls their device_id
        # (messages.device_id has a trigger on devices instead of a foreign key: models.message.PARENT_TRIGGERS_DDL).
        # Taken before the INSERT, whose snapshot then no longer sees a device deleted by whoever had it before.
        db.session.execute(select(func.pg_advisory_xact_lock_shared(DEVICE_LOCK, app_id)))
    # SQLAlchemy reports an INSERT's rowcount only when asked to preserve it.
    statement = insert(m).from_select(columns, rows).execution_options(preserve_rowcount=True)
    with _bulk_write_cache():
        created = db.session.execute(statement).rowcount
    if db.engine.dialect.name == "postgresql" and created and analyze:
        # Fresh statistics for the rows just added (ANALYZE counts our own uncommitted inserts): with the stale
        # ones (say, from when the table was small or all sent) the planner believes ix_messages_pending is nearly
        # empty and scans all of it for every batch the workers record, instead of looking the batch's ids up.
        db.session.execute(text(f"ANALYZE {m.name}"))
    return created
