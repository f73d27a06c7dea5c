"""Demo audience: the app "Nibs", tens of thousands of subscribers with devices, and a few groups.

Rows are generated in Python and inserted set-based (executemany in chunks), so the same code builds the
20,000 subscribers of `demo load` in seconds and the 500,000 of the scale benchmarks in minutes.
"""

from __future__ import annotations

import functools
import itertools
import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, insert, select, text

from webadmin.extensions import db
from webadmin.models.app import PLATFORMS, App
from webadmin.models.audience import Device, Group, GroupMember, Subscriber
from webadmin.models.types import utcnow
from webadmin.services import bulk, demo

DEMO_SUBSCRIBERS = 20_000
APP_NAME = "Nibs"
APP_SCHEME = "nibs"
CHUNK = 5_000  # subscribers per round trip; also keeps SQLite's bound-parameter limit far away


class LocaleProfile(NamedTuple):
    """What people of one locale look like: time zones, mobile numbers (E.164) and common names."""

    time_zones: tuple[str, ...]
    country_code: str
    mobile_prefixes: tuple[str, ...]
    digits: int  # after the prefix
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]


LOCALES: dict[str, LocaleProfile] = {
    "en-US": LocaleProfile(
        ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"), "1",
        ("212", "312", "415", "646", "737"), 7,
        ("James", "Olivia", "Liam", "Emma", "Noah", "Ava", "Ethan", "Mia", "Mason", "Harper", "Aiden", "Zoe"),
        ("Smith", "Johnson", "Williams", "Brown", "Garcia", "Miller", "Davis", "Rodriguez", "Wilson", "Moore"),
    ),
    "en-GB": LocaleProfile(
        ("Europe/London",), "44", ("7700", "7911", "7456"), 6,
        ("Oliver", "Amelia", "George", "Isla", "Harry", "Poppy", "Jack", "Freya", "Alfie", "Grace"),
        ("Taylor", "Evans", "Thomas", "Roberts", "Walker", "Wright", "Hughes", "Green", "Hall", "O'Brien"),
    ),
    "de-DE": LocaleProfile(
        ("Europe/Berlin",), "49", ("151", "160", "170", "176"), 8,
        ("Lukas", "Lena", "Felix", "Hannah", "Jonas", "Leonie", "Paul", "Marie", "Jürgen", "Sabine"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Hoffmann", "Koch"),
    ),
    "fr-FR": LocaleProfile(
        ("Europe/Paris",), "33", ("6", "7"), 8,
        ("Hugo", "Léa", "Louis", "Chloé", "Gabriel", "Manon", "Jules", "Camille", "Théo", "Inès"),
        ("Martin", "Bernard", "Dubois", "Durand", "Lefèvre", "Moreau", "Laurent", "Simon", "Michel", "Garnier"),
    ),
    "pl-PL": LocaleProfile(
        ("Europe/Warsaw",), "48", ("50", "60", "69", "79"), 7,
        ("Anna", "Jan", "Katarzyna", "Piotr", "Agnieszka", "Tomasz", "Małgorzata", "Michał", "Zofia", "Marek"),
        ("Nowak", "Wójcik", "Kowalczyk", "Mazur", "Krawczyk", "Kaczmarek", "Zając", "Król", "Wieczorek", "Sowa"),
    ),
    "ru-RU": LocaleProfile(
        ("Europe/Moscow", "Asia/Yekaterinburg", "Asia/Novosibirsk"), "7", ("903", "916", "926"), 7,
        ("Olga", "Ivan", "Elena", "Dmitri", "Natalia", "Sergei", "Tatiana", "Alexei", "Irina", "Mikhail"),
        ("Ivanova", "Petrov", "Smirnova", "Kuznetsov", "Popova", "Sokolov", "Volkova", "Morozov", "Lebedev", "Orlova"),
    ),
    "es-ES": LocaleProfile(
        ("Europe/Madrid", "Atlantic/Canary"), "34", ("6", "7"), 8,
        ("Lucía", "Pablo", "Carmen", "Diego", "Alba", "Mateo", "Marta", "Javier", "Paula", "Álvaro"),
        ("García", "Martínez", "López", "Sánchez", "Pérez", "Gómez", "Fernández", "Ruiz", "Díaz", "Moreno"),
    ),
    "it-IT": LocaleProfile(
        ("Europe/Rome",), "39", ("320", "333", "347"), 7,
        ("Giulia", "Marco", "Francesca", "Luca", "Chiara", "Matteo", "Sara", "Alessandro", "Elena", "Davide"),
        ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco"),
    ),
    "pt-BR": LocaleProfile(
        ("America/Sao_Paulo", "America/Manaus"), "55", ("119", "219"), 8,
        ("João", "Beatriz", "Gabriel", "Ana", "Rafael", "Larissa", "Lucas", "Fernanda", "Pedro", "Juliana"),
        ("Silva", "Santos", "Oliveira", "Souza", "Lima", "Pereira", "Costa", "Almeida", "Carvalho", "Ribeiro"),
    ),
    "nl-NL": LocaleProfile(
        ("Europe/Amsterdam",), "31", ("6",), 8,
        ("Daan", "Sanne", "Pieter", "Emma", "Sem", "Julia", "Lars", "Fleur", "Bram", "Anouk"),
        ("de Jong", "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "Bos"),
    ),
    "sv-SE": LocaleProfile(
        ("Europe/Stockholm",), "46", ("70", "73"), 7,
        ("Sven", "Astrid", "Erik", "Ingrid", "Oscar", "Freja", "Nils", "Elsa", "Axel", "Maja"),
        ("Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson", "Lindberg"),
    ),
}
LOCALE_WEIGHTS = (18, 10, 12, 9, 16, 10, 7, 6, 5, 4, 3)  # in the order of LOCALES
PLATFORM_WEIGHTS = (50, 35, 15)  # android, ios, web
_LOCALE_CUM = tuple(itertools.accumulate(LOCALE_WEIGHTS))  # random.choices is quicker given cumulative weights
_PLATFORM_CUM = tuple(itertools.accumulate(PLATFORM_WEIGHTS))
INVALID_REASONS = {
    "android": ("UNREGISTERED", "INVALID_ARGUMENT", "SENDER_ID_MISMATCH"),
    "ios": ("Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"),
    "web": ("UNREGISTERED", "EXPIRED_SUBSCRIPTION"),
}
_NOT_DECOMPOSED = str.maketrans({"ł": "l", "ø": "o", "ß": "ss", "æ": "ae"})
APP_VERSIONS = ("4.8.2", "4.9.0", "4.9.1", "5.0.0", "5.0.3", "5.1.0")
TIERS = ("bronze", "silver", "gold", "platinum")
TIER_WEIGHTS = (55, 28, 13, 4)
_TIER_CUM = tuple(itertools.accumulate(TIER_WEIGHTS))
# name: (description, share of subscribers)
GROUPS: dict[str, tuple[str, float]] = {
    "Key customers": ("Top spenders of the last twelve months; first to hear about offers.", 0.02),
    "Owners of the Frania washer": ("Registered a Frania washing machine for warranty or service reminders.", 0.08),
    "Newsletter": ("Asked for the weekly newsletter.", 0.35),
    "Beta testers": ("Try new app versions before everyone else.", 0.01),
}


@functools.cache  # a few hundred names, each spelt 20,000 times
def _ascii(name: str) -> str:
    """A name as a plain-ASCII email local part: "Wójcik" → "wojcik", "de Jong" → "dejong"."""
    name = name.lower().translate(_NOT_DECOMPOSED)
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(c for c in plain if c.isalnum())


@dataclass
class _Chunk:
    """Generated rows of one chunk: subscribers by key, and devices and group names per key."""

    subscribers: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)


class _AudienceMaker:
    """Deterministic rows for subscriber number n: the same seed always gives the same people and tokens."""

    def __init__(self, seed: int, app_id: int, devices_max: int, now: datetime) -> None:
        self.rng = random.Random(seed)
        self.app_id, self.devices_max, self.now = app_id, max(1, devices_max), now
        self.locales = list(LOCALES)

    def phone(self, profile: LocaleProfile) -> str | None:
        """An E.164 mobile number for about 70% of people."""
        if self.rng.random() >= 0.7:
            return None
        number = self.rng.randrange(10 ** (profile.digits - 1), 10**profile.digits)
        return f"+{profile.country_code}{self.rng.choice(profile.mobile_prefixes)}{number}"

    def subscriber(self, n: int) -> dict[str, Any]:
        """One subscriber row, keyed `firstname.lastname<N>@example.com`."""
        rng = self.rng
        locale = rng.choices(self.locales, cum_weights=_LOCALE_CUM)[0]
        profile = LOCALES[locale]
        first, last = rng.choice(profile.first_names), rng.choice(profile.last_names)
        created = self.now - timedelta(days=rng.uniform(30, 1000))
        return {
            "subscriber_key": f"{_ascii(first)}.{_ascii(last)}{n}@example.com",
            "display_name": f"{first} {last}",
            "locale": locale,
            "time_zone": rng.choice(profile.time_zones),
            "phone": self.phone(profile),
            "attributes": {"tier": rng.choices(TIERS, cum_weights=_TIER_CUM)[0],
                           "points": rng.randrange(0, 20_000, 10)},
            "opted_out": rng.random() < 0.02,
            "created_at": created,
            "updated_at": created,
        }

    def device(self, n: int, k: int, person: dict[str, Any]) -> dict[str, Any]:
        """Device k of subscriber n: mostly active, a few invalid (with a provider's reason) or unsubscribed."""
        rng = self.rng
        platform = rng.choices(PLATFORMS, cum_weights=_PLATFORM_CUM)[0]
        registered = person["created_at"] + timedelta(days=rng.uniform(0, 30 + k * 200))
        registered = min(registered, self.now - timedelta(minutes=rng.randrange(1, 600)))
        roll = rng.random()
        status = "invalid" if roll < 0.04 else "unsubscribed" if roll < 0.07 else "active"
        invalid = status == "invalid"
        return {
            "app_id": self.app_id,
            "platform": platform,
            # Unique by construction (n, k); the random tail makes it look like a provider token.
            "token": f"sim-{platform}-{n:x}-{k}-{rng.getrandbits(128):032x}",
            "status": status,
            "invalid_reason": rng.choice(INVALID_REASONS[platform]) if invalid else None,
            "invalidated_at": min(registered + timedelta(days=rng.uniform(1, 60)), self.now) if invalid else None,
            "registered_at": registered,
            "app_version": rng.choice(APP_VERSIONS),
            "locale": person["locale"],
            "time_zone": person["time_zone"],
            "created_at": registered,
        }

    def chunk(self, start: int, stop: int) -> _Chunk:
        """Rows for subscribers number start … stop-1."""
        out = _Chunk()
        for n in range(start, stop):
            person = self.subscriber(n)
            key = person["subscriber_key"]
            out.subscribers[key] = person
            count = self.rng.randint(1, self.devices_max)
            out.devices[key] = [self.device(n, k, person) for k in range(count)]
            out.groups[key] = [name for name, (_, share) in GROUPS.items() if self.rng.random() < share]
        return out


def _demo_app() -> App:
    """The demo app, created when missing."""
    app = db.session.scalar(select(App).where(App.name == APP_NAME))
    if app is None:
        app = App(name=APP_NAME, platforms=list(PLATFORMS), deep_link_scheme=APP_SCHEME)
        db.session.add(app)
        db.session.flush()
    return app


def _demo_groups() -> tuple[dict[str, int], int]:
    """Ids of the demo groups by name (created when missing), and how many were created."""
    existing = dict(db.session.execute(select(Group.name, Group.id).where(Group.name.in_(GROUPS))).all())
    missing = [
        {"name": name, "description": description, "created_at": utcnow(), "updated_at": utcnow()}
        for name, (description, _) in GROUPS.items()
        if name not in existing
    ]
    if missing:
        db.session.execute(insert(Group.__table__), missing)
        existing = dict(db.session.execute(select(Group.name, Group.id).where(Group.name.in_(GROUPS))).all())
    return existing, len(missing)


def _ranges(total: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of each chunk of subscriber numbers 1 … total."""
    for start in range(1, total + 1, CHUNK):
        yield start, min(start + CHUNK, total + 1)


def _insert_chunk(rows: _Chunk, group_ids: dict[str, int]) -> tuple[int, int, int]:
    """Insert the chunk's subscribers that do not exist yet, then their devices and memberships."""
    subscribers = Subscriber.__table__
    present = select(subscribers.c.subscriber_key).where(subscribers.c.subscriber_key.in_(rows.subscribers))
    known = set(db.session.scalars(present))
    new = [row for key, row in rows.subscribers.items() if key not in known]
    if not new:
        return 0, 0, 0
    # Plain rows (executemany on SQLite, COPY on PostgreSQL), then one SELECT for the ids: SQLAlchemy's
    # executemany spent more time converting each value than the database spent storing it.
    bulk.insert_dicts(subscribers, new)
    inserted = [row["subscriber_key"] for row in new]
    ids = dict(
        db.session.execute(
            select(subscribers.c.subscriber_key, subscribers.c.id).where(subscribers.c.subscriber_key.in_(inserted))
        ).all()
    )
    devices = [{**device, "subscriber_id": ids[key]} for key in ids for device in rows.devices[key]]
    now = utcnow()
    members = [
        {"group_id": group_ids[name], "subscriber_id": ids[key], "added_at": now}
        for key in ids
        for name in rows.groups[key]
    ]
    bulk.insert_dicts(Device.__table__, devices)
    bulk.insert_dicts(GroupMember.__table__, members)
    return len(ids), len(devices), len(members)


def generate_audience(subscribers: int, devices_per_subscriber_max: int = 3, seed: int = 1) -> dict[str, int]:
    """Add the demo app, `subscribers` people with 1…max devices each, and the groups; skip what exists.

    Does not commit (the caller does). Returns how many rows of each kind were added.
    """
    app = _demo_app()
    group_ids, groups_added = _demo_groups()
    maker = _AudienceMaker(seed, app.id, devices_per_subscriber_max, utcnow())
    totals = {"subscribers": 0, "devices": 0, "memberships": 0, "groups": groups_added}
    for start, stop in _ranges(subscribers):
        added = _insert_chunk(maker.chunk(start, stop), group_ids)
        for name, count in zip(("subscribers", "devices", "memberships"), added, strict=True):
            totals[name] += count
    if totals["subscribers"] and db.engine.dialect.name == "postgresql":
        # Statistics for the rows just copied in (autovacuum comes later): without them the planner guesses
        # the tables nearly empty, and the campaigns that target this audience next pick nested loops over it.
        db.session.execute(text("ANALYZE subscribers, devices, group_members"))
    return totals


@demo.register_loader("audience")
def load_demo_audience() -> str | None:
    """`demo load`: the Nibs app with 20,000 subscribers, their devices and four groups."""
    added = generate_audience(DEMO_SUBSCRIBERS)
    if not added["subscribers"]:
        return None
    return f"{added['subscribers']:,} subscribers with {added['devices']:,} devices in {len(GROUPS)} groups"


def _count(column: Any) -> int:
    """Rows in a table, counted by its key column."""
    return db.session.scalar(select(func.count(column))) or 0


demo.register_counter("Subscribers", lambda: _count(Subscriber.id))
demo.register_counter("Devices", lambda: _count(Device.id))
demo.register_counter("Groups", lambda: _count(Group.id))
