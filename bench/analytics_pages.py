"""Analytics pages at scale: p50/p95 of the campaign page, the dashboard and the analytics page with a campaign of
1M messages against the same pages with 1k messages.

Run: .venv/bin/python bench/analytics_pages.py [--large 1000000] [--small 1000] [--requests 150] [--postgres]
     [--quick]
Each size gets a fresh database (a temporary SQLite file; with --postgres also the local server's own databases
`webadmin_bench_analytics_<size>`, created and dropped): an audience of N devices and one all-devices campaign
materialised by the real `campaigns.start()` (set-based helpers of engine_materialize.py), whose outcome is then
written set-based (2% failed across the failure classes, 20% opened over seven hours, a third of the android/ios
sends reported received); `flask analytics rebuild` computes the rollups. Both sizes also get the same 30 days of
hourly traffic rollups (every hour × platform × source: the most rows the dashboard can read), so the only
difference between them is the number of messages. A viewer signs in through the Flask test client of each
database and every page is timed on both in turn, interleaved (after a warm-up), so load from other work on the
machine falls on both sizes alike. Targets (issue 7): p95 < 100 ms and p95(1M) ≤ 2 × p95(1k).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from engine_materialize import (  # noqa: E402
    POSTGRES_SERVER,
    _admin,
    bench_app,
    build_audience,
    postgres_admin_url,
    postgres_up,
    started_campaign,
)
from flask import Flask  # noqa: E402
from sqlalchemy import case, func, insert, select, text, update  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from werkzeug.security import generate_password_hash  # noqa: E402

from webadmin.extensions import db  # noqa: E402
from webadmin.models.analytics import HourlyRollup  # noqa: E402
from webadmin.models.audience import Device  # noqa: E402
from webadmin.models.campaign import Campaign  # noqa: E402
from webadmin.models.message import Message  # noqa: E402
from webadmin.models.types import utcnow  # noqa: E402
from webadmin.models.user import Role, User  # noqa: E402
from webadmin.services import rollups  # noqa: E402
from webadmin.services.rollups import hour_of  # noqa: E402

VIEWER, PASSWORD = "bench-viewer@example.com", "a long benchmark password"
BENCH_DATABASE = "webadmin_bench_analytics"
TARGET_MS, TARGET_RATIO = 100.0, 2.0
PAGES = ("campaign", "dashboard", "analytics")


@dataclass
class Timings:
    """Milliseconds per page of one database."""

    label: str
    millis: dict[str, list[float]] = field(default_factory=lambda: {page: [] for page in PAGES})
    errors: int = 0

    def pct(self, page: str, q: float) -> float:
        """The q-th percentile (nearest rank) of a page."""
        ordered = sorted(self.millis[page])
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    def lines(self) -> list[str]:
        """One printed row per page."""
        return [f"{self.label:<22} {page:<10} p50 {self.pct(page, 50):6.1f} ms  p95 {self.pct(page, 95):6.1f} ms  "
                f"max {max(self.millis[page]):6.1f} ms  mean {statistics.fmean(self.millis[page]):6.1f} ms"
                for page in PAGES]


def _outcome(campaign_id: int, now: datetime) -> None:
    """Write a sent campaign's history set-based: sends, failures by class, opens over seven hours, receipts."""
    m, d = Message.__table__, Device.__table__
    sent_at = hour_of(now) - timedelta(hours=8)
    mine = m.c.campaign_id == campaign_id
    db.session.execute(update(m).where(mine).values(state="SENT", backend="debug", sent_at=sent_at,
                                                    number_of_send_attempts=1, changed_at=sent_at))
    failing = mine & (m.c.id % 50 == 0)
    reason = case((m.c.id % 200 == 0, "invalid_token"), (m.c.id % 150 == 0, "quota"), (m.c.id % 100 == 0, "payload"),
                  else_="other")
    db.session.execute(update(m).where(failing).values(state="ERROR", failure_class=reason, error="BENCH: failed",
                                                       sent_at=None, changed_at=sent_at + timedelta(minutes=5)))
    for hour in range(7):
        opening = mine & (m.c.state == "SENT") & (m.c.id % 5 == 1) & (m.c.id % 7 == hour)
        db.session.execute(update(m).where(opening).values(opened_at=sent_at + timedelta(hours=hour, minutes=10)))
    receipts = mine & (m.c.state == "SENT") & (m.c.id % 3 == 0) & m.c.device_id.in_(
        select(d.c.id).where(d.c.platform.in_(("android", "ios"))))
    db.session.execute(update(m).where(receipts).values(received_at=sent_at + timedelta(seconds=3)))
    counts = db.session.execute(select(func.count().filter(m.c.state == "SENT"), func.count().filter(
        m.c.state == "ERROR"), func.count(m.c.opened_at)).where(mine)).one()
    db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(
        status="sent", sent=counts[0], failed=counts[1], opened=counts[2], finished_at=sent_at))
    db.session.commit()


def _history(now: datetime) -> None:
    """30 days of hourly traffic for every platform and source before the campaign (the same for both sizes)."""
    now = hour_of(now)
    rows = [{"hour": now - timedelta(hours=h), "platform": p, "source": s, "sent": 100 + h % 17, "failed": h % 3,
             "opened": 20 + h % 7, "received": 0}
            for h in range(9, 30 * 24) for p in ("android", "ios", "web") for s in ("adhoc", "offer", "social", "api")]
    db.session.execute(insert(HourlyRollup.__table__), rows)
    db.session.commit()


def build(app: Flask, size: int) -> int:
    """Audience, campaign, history, rollups and a viewer; returns the campaign id."""
    with app.app_context():
        began = time.perf_counter()
        now = utcnow()  # one instant for the campaign and the history: a large build can outlast an hour
        app_id = build_audience(size)
        campaign_id, targeted, _ = started_campaign(app_id)
        assert targeted == size, (targeted, size)
        _outcome(campaign_id, now)
        written = rollups.rebuild()
        _history(now)
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text("ANALYZE"))
            db.session.commit()
        db.session.add(User(email=VIEWER, role=Role.VIEWER.value, active=True,
                            password_hash=generate_password_hash(PASSWORD, method="scrypt")))
        db.session.commit()
        db.session.remove()
        print(f"  built {size:,} messages in {time.perf_counter() - began:.1f} s; rollups {written}", flush=True)
        return campaign_id


@contextmanager
def databases(kind: str, sizes: tuple[int, ...]) -> Iterator[dict[int, tuple[str, Path]]]:
    """An empty database per size, all alive at once: SQLite files, or PostgreSQL databases of our own."""
    with tempfile.TemporaryDirectory(prefix="webadmin-bench-") as tmp:
        folder = Path(tmp)
        os.environ["WEBADMIN_INSTANCE_PATH"] = str(folder)
        if kind == "sqlite":
            yield {size: (f"sqlite:///{folder / f'bench-{size}.sqlite3'}", folder) for size in sizes}
            return
        names = {size: f"{BENCH_DATABASE}_{size}" for size in sizes}
        for name in names.values():
            _admin(POSTGRES_SERVER, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            _admin(POSTGRES_SERVER, f"CREATE DATABASE {name}")
        server = make_url(postgres_admin_url(POSTGRES_SERVER))
        try:
            yield {size: (server.set(database=name).render_as_string(hide_password=False), folder)
                   for size, name in names.items()}
        finally:
            for name in names.values():
                _admin(POSTGRES_SERVER, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _signed_in(app: Flask) -> Any:
    """A test client signed in as the viewer."""
    client = app.test_client()
    response = client.post("/login", data={"email": VIEWER, "password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return client


def measure(kind: str, sites: dict[int, tuple[Flask, int]], requests: int, warmup: int = 10) -> dict[int, Timings]:
    """Time each page of each database in turn, interleaved (small, large, large, small, …), so that the other
    load on the machine weighs on both alike."""
    clients = {size: (_signed_in(app), campaign_id) for size, (app, campaign_id) in sites.items()}
    timings = {size: Timings(f"{kind} {size:,} msgs") for size in sites}
    order = list(sites)
    for index in range(warmup + requests):
        for page in PAGES:
            for size in order if index % 2 else reversed(order):
                client, campaign_id = clients[size]
                url = {"campaign": f"/campaigns/{campaign_id}", "dashboard": "/", "analytics": "/analytics/"}[page]
                started = time.perf_counter()
                response = client.get(url)
                elapsed = (time.perf_counter() - started) * 1000
                if index >= warmup:
                    timings[size].millis[page].append(elapsed)
                    timings[size].errors += response.status_code != 200 or b'data-chart="chart-' not in response.data
    return timings


def run_backend(kind: str, sizes: tuple[int, int], requests: int) -> list[Timings]:
    """Build the small and the large database of one backend, then measure them side by side."""
    with databases(kind, sizes) as urls:
        sites = {}
        for size, (url, folder) in urls.items():
            print(f"{kind} {size:,} messages:", flush=True)
            app = bench_app(url, folder, SECRET_KEY="bench", WTF_CSRF_ENABLED=False)
            sites[size] = (app, build(app, size))
        results = measure(kind, sites, requests)
        for app, _ in sites.values():
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
    for timings in results.values():
        print("\n".join("  " + line for line in timings.lines()), flush=True)
    return [results[size] for size in sizes]


def report(small: Timings, large: Timings) -> None:
    """Ratios large/small and the verdicts."""
    for page in PAGES:
        p95_small, p95_large = small.pct(page, 95), large.pct(page, 95)
        ratio = p95_large / p95_small
        verdict = "met" if p95_large < TARGET_MS and ratio <= TARGET_RATIO else "MISSED"
        if page == "analytics":
            verdict += " (no target for this page)"
        print(f"{large.label.split()[0]:<10} {page:<10} p95 {p95_small:6.1f} ms → {p95_large:6.1f} ms, ratio "
              f"{ratio:4.2f}; p50 {small.pct(page, 50):5.1f} → {large.pct(page, 50):5.1f} ms (target p95 < "
              f"{TARGET_MS:.0f} ms and ≤ {TARGET_RATIO:.0f}×): {verdict}; errors {small.errors + large.errors}")


def main() -> None:
    """Parse arguments, build and measure each backend, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=1_000_000, help="messages in the large campaign")
    parser.add_argument("--small", type=int, default=1_000, help="messages in the small campaign")
    parser.add_argument("--requests", type=int, default=150, help="timed requests per page")
    parser.add_argument("--postgres", action="store_true", help="also measure PostgreSQL (local server)")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.large, args.requests = 20_000, 20
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} before the run; Flask test client, one request at a time")
    kinds = ["sqlite"]
    if args.postgres:
        if postgres_up(POSTGRES_SERVER):
            kinds.append("postgresql")
        else:
            print("[postgresql] skipped: the server does not answer")
    outcomes = {kind: run_backend(kind, (args.small, args.large), args.requests) for kind in kinds}
    print(f"\n=== p95 with {args.large:,} messages against {args.small:,} "
          f"(load average now {os.getloadavg()[0]:.1f}) ===")
    for small, large in outcomes.values():
        report(small, large)


if __name__ == "__main__":
    main()
