"""Subscriber search at scale: p50/p95 of `GET /audience/?q=…` with 500k subscribers and 1M devices.

Run: .venv/bin/python bench/audience_scale.py [--subscribers 500000] [--small 1000] [--requests 200] [--postgres]
     [--only sqlite|postgresql] [--no-vacuum]
Builds each database with `generate_audience` (the demo loader's code), signs in as a viewer through the Flask
test client and times the same mix of searches (name and key prefixes, with and without platform, group and
device-status filters) against the large database and a small peer built in the same run; prints the ratio.
SQLite goes to a temporary file; with --postgres, a dedicated database `webadmin_bench` on the local server is
created and dropped again. Target: p95 < 150 ms at 500k/1M.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from werkzeug.security import generate_password_hash  # noqa: E402

from webadmin import create_app  # noqa: E402
from webadmin.extensions import db  # noqa: E402
from webadmin.models.audience import Group  # noqa: E402
from webadmin.models.user import Role, User  # noqa: E402
from webadmin.services.demo_audience import LOCALES, generate_audience  # noqa: E402

POSTGRES_SERVER = "postgresql+psycopg://root@127.0.0.1:5432/test"
BENCH_DATABASE = "webadmin_bench"
VIEWER, PASSWORD = "bench-viewer@example.com", "a long benchmark password"
TARGET_P95_MS = 150.0


@dataclass
class Timings:
    """Latencies of one run of the request mix, in milliseconds."""

    label: str
    millis: list[float]
    errors: int
    empty: int
    kinds: list[str]

    def pct(self, q: float, kind: str | None = None) -> float:
        """The q-th percentile (nearest rank), of all requests or of one kind."""
        ordered = sorted(ms for ms, k in zip(self.millis, self.kinds, strict=True) if kind in (None, k))
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    def by_kind(self) -> str:
        """p50/p95 of each kind of request."""
        return "\n".join(
            f"    {kind:<26} p50 {self.pct(50, kind):7.1f} ms  p95 {self.pct(95, kind):7.1f} ms"
            for kind in dict.fromkeys(self.kinds)
        )

    def line(self) -> str:
        """One printed row."""
        return (
            f"{self.label:<34} p50 {self.pct(50):7.1f} ms  p95 {self.pct(95):7.1f} ms  max {max(self.millis):7.1f} ms"
            f"  mean {statistics.fmean(self.millis):6.1f} ms  errors {self.errors}  empty pages {self.empty}"
        )


def bench_app(url: str, instance: str) -> Flask:
    """An app on the given database, with sign-in limits and CSRF out of the way."""
    return create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "SECRET_KEY": "bench",
            "WTF_CSRF_ENABLED": False,
            "TESTING": False,
            "INSTANCE_PATH": instance,
            "QUEUE_IMMEDIATE": True,
            "LOG_LEVEL": "WARNING",
        }
    )


@contextlib.contextmanager
def scratch_database(backend: str, workdir: str, name: str) -> Iterator[str]:
    """A URL to an empty database: a new SQLite file, or a dedicated PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{Path(workdir) / (name + '.sqlite3')}"
        return
    server = create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {BENCH_DATABASE}"))
    try:
        yield make_url(POSTGRES_SERVER).set(database=BENCH_DATABASE).render_as_string(hide_password=False)
    finally:
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)"))
        server.dispose()


def build(app: Flask, subscribers: int, vacuum: bool = True) -> float:
    """Create the tables, load the audience and a viewer; seconds spent loading."""
    with app.app_context():
        db.create_all()
        started = time.perf_counter()
        added = generate_audience(subscribers, devices_per_subscriber_max=3, seed=1)
        db.session.commit()
        seconds = time.perf_counter() - started
        if db.engine.dialect.name == "postgresql":
            # What autovacuum does shortly after a bulk load (its insert threshold): statistics, and the visibility
            # map without which no index-only scan skips the table. --no-vacuum measures before that, ANALYZE only.
            command = "VACUUM ANALYZE" if vacuum else "ANALYZE"
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(command))
        password_hash = generate_password_hash(PASSWORD, method="scrypt")
        db.session.add(User(email=VIEWER, role=Role.VIEWER.value, active=True, password_hash=password_hash))
        db.session.commit()
        print(
            f"  loaded {added['subscribers']:,} subscribers, {added['devices']:,} devices, "
            f"{added['memberships']:,} memberships in {seconds:.1f} s",
            flush=True,
        )
    return seconds


def request_mix(count: int, seed: int = 42) -> list[tuple[str, dict[str, str]]]:
    """(kind, query string): name and key prefixes of varied length, some with filters, a few matching nobody."""
    rng = random.Random(seed)
    groups = ["Key customers", "Owners of the Frania washer", "Newsletter", "Beta testers"]
    mix = []
    for i in range(count):
        profile = rng.choice(list(LOCALES.values()))
        first, last = rng.choice(profile.first_names), rng.choice(profile.last_names)
        kind = i % 10
        if kind < 4:
            mix.append(("first-name prefix", {"q": first[: rng.randint(1, 4)]}))
        elif kind < 6:
            mix.append(("full name", {"q": f"{first} {last[: rng.randint(1, 3)]}"}))
        elif kind == 6:
            mix.append(("key prefix", {"q": f"{first}.{last}"[: rng.randint(6, 12)].lower().replace(" ", "")}))
        elif kind == 7:
            mix.append(("prefix + platform", {"q": first[:2], "platform": rng.choice(["android", "ios", "web"])}))
        elif kind == 8:
            args = {"q": first[:3], "group": rng.choice(groups), "status": rng.choice(["active", "invalid"])}
            mix.append(("prefix + group + status", args))
        else:
            args = rng.choice([{"status": "invalid"}, {"group": "Beta testers"}, {"platform": "web"}, {"q": "zzq"}])
            mix.append(("filters only / no match", args))
    return mix


def measure(app: Flask, label: str, mix: list[tuple[str, dict[str, str]]], warmup: int = 10) -> Timings:
    """Sign in as the viewer and time each search page."""
    with app.app_context():
        group_ids = {name: str(gid) for name, gid in db.session.execute(select(Group.name, Group.id))}
    client = app.test_client()
    response = client.post("/login", data={"email": VIEWER, "password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    millis, kinds, errors, empty = [], [], 0, 0
    for index, (kind, args) in enumerate(mix[:warmup] + mix):
        query = {k: group_ids.get(v, v) if k == "group" else v for k, v in args.items()}
        started = time.perf_counter()
        response = client.get("/audience/", query_string=query)
        elapsed = (time.perf_counter() - started) * 1000
        if index < warmup:
            continue
        millis.append(elapsed)
        kinds.append(kind)
        errors += response.status_code != 200
        empty += b'href="/audience/subscribers/' not in response.data
    return Timings(label, millis, errors, empty, kinds)


def run_backend(
    backend: str, sizes: tuple[int, int], mix: list[tuple[str, dict[str, str]]], workdir: str, vacuum: bool = True
) -> list[Timings]:
    """Build and measure the small and the large database of one backend."""
    results = []
    for subscribers in sizes:
        label = f"{backend} {subscribers:,} subscribers"
        print(f"{label}:", flush=True)
        with scratch_database(backend, workdir, f"audience_{subscribers}") as url:
            app = bench_app(url, workdir)
            build(app, subscribers, vacuum)
            results.append(measure(app, label, mix))
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
        print("  " + results[-1].line() + "\n" + results[-1].by_kind(), flush=True)
    return results


def report(results: list[Timings]) -> None:
    """The ratio large/small and the verdict against the target."""
    small, large = results
    print(
        f"  ratio {large.label.split(' ', 1)[1]} / {small.label.split(' ', 1)[1]}: "
        f"p50 ×{large.pct(50) / small.pct(50):.2f}, p95 ×{large.pct(95) / small.pct(95):.2f}; "
        f"p95 {'meets' if large.pct(95) < TARGET_P95_MS else 'MISSES'} the {TARGET_P95_MS:.0f} ms target"
    )


def main() -> None:
    """Parse options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=500_000)
    parser.add_argument("--small", type=int, default=1_000, help="the peer measured in the same run")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--postgres", action="store_true", help=f"also on PostgreSQL (database {BENCH_DATABASE})")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], help="measure one backend")
    parser.add_argument("--no-vacuum", action="store_true", help="PostgreSQL: ANALYZE only after loading")
    options = parser.parse_args()
    print(
        f"{time.strftime('%Y-%m-%d')} · Python {platform.python_version()} · SQLite {sqlite3.sqlite_version} · "
        f"{os.cpu_count()} CPUs · {options.requests} requests (+10 warm-up) per database"
    )
    mix = request_mix(options.requests)
    backends = ["sqlite", "postgresql"] if options.postgres else ["sqlite"]
    if options.only:
        backends = [options.only]
    with tempfile.TemporaryDirectory(prefix="webadmin-bench-") as workdir:
        for backend in backends:
            report(run_backend(backend, (options.small, options.subscribers), mix, workdir, not options.no_vacuum))


if __name__ == "__main__":
    main()
