"""Measure POST /api/v1/events under gunicorn (2 workers) against GET /api/v1/health in the same run.

Run: .venv/bin/python bench/events_endpoint.py [--duration 10] [--rounds 5] [--concurrency 16] [--messages 100000]
     [--workers 2] [--batch 1] [--postgres] [--only sqlite|postgresql] [--quick]
A fresh database (a temporary SQLite file, or with --postgres the local server's own database
`webadmin_bench_events`, created and dropped) is migrated with `flask db upgrade`; an audience and one sent campaign
of --messages messages are built set-based (bench/engine_materialize.py), an API key is made, and gunicorn serves
the app on 127.0.0.1. The load generator of bench/device_upsert.py (raw HTTP/1.1 on asyncio streams, one
connection per request, as gunicorn's sync workers close them anyway) measures the no-database baseline (health)
and the events in --rounds alternating pairs of phases (so both see the shared machine at the same speeds); each
events request reports --batch events (default 1: an app reports an open when it
happens), 60% opened and 40% received, a fifth of them a repeat of one already reported (counted once), one in a
hundred for an unknown message. Afterwards the counts are checked: the campaign's opens, its rollup and the
hourly rollups equal the distinct opens sent, and `analytics rebuild` changes nothing.
Targets (issue 7): ≥ 2,000 req/s, ≥ 0.6 × health in the same run, p99 < 50 ms, 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from device_upsert import HttpClient, Result, _free_port, _run_phase, _start_gunicorn, _wait_ready  # noqa: E402
from engine_materialize import (  # noqa: E402
    POSTGRES_SERVER,
    bench_app,
    bench_database,
    build_audience,
    postgres_up,
    started_campaign,
)
from sqlalchemy import func, select, update  # noqa: E402

from webadmin.extensions import db  # noqa: E402
from webadmin.models.analytics import CampaignRollup, HourlyRollup  # noqa: E402
from webadmin.models.app import ApiKey, hash_api_key  # noqa: E402
from webadmin.models.campaign import Campaign  # noqa: E402
from webadmin.models.message import Message  # noqa: E402
from webadmin.models.types import utcnow  # noqa: E402
from webadmin.services import rollups  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"
REPEAT_SHARE, UNKNOWN_SHARE, OPENED_SHARE = 0.2, 0.01, 0.6
TARGET_RATE, TARGET_RATIO, TARGET_P99_MS = 2000.0, 0.6, 50.0
# Its own database: engine_throughput.py (and helpers' benchmarks run meanwhile) use webadmin_bench_engine, and
# bench_database drops the database WITH (FORCE) before and after.
BENCH_DATABASE = "webadmin_bench_events"


def _prepare(url: str, folder: Path, messages: int) -> tuple[dict[str, str], str, list[str], int]:
    """Migrate, build a sent campaign and an API key; returns (gunicorn env, key, message uuids, campaign id)."""
    env = {**os.environ, "WEBADMIN_DATABASE_URL": url, "WEBADMIN_INSTANCE_PATH": str(folder / "instance"),
           "WEBADMIN_LOG_LEVEL": "WARNING", "WEBADMIN_SECRET_KEY": "bench", "PYTHONPATH": str(ROOT)}
    subprocess.run([str(VENV_BIN / "flask"), "--app", "wsgi:app", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    app = bench_app(url, folder, create=False)
    with app.app_context():
        app_id = build_audience(messages)
        campaign_id, targeted, _ = started_campaign(app_id)
        assert targeted == messages, (targeted, messages)
        m = Message.__table__
        db.session.execute(update(m).where(m.c.campaign_id == campaign_id).values(
            state="SENT", backend="debug", sent_at=utcnow(), number_of_send_attempts=1))
        db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(status="sent", sent=targeted))
        prefix, secret = ApiKey.generate()
        db.session.add(ApiKey(app_id=app_id, name="bench", prefix=prefix, key_hash=hash_api_key(secret)))
        db.session.commit()
        rollups.rebuild()
        uuids = list(db.session.scalars(select(m.c.uuid).where(m.c.campaign_id == campaign_id)))
        db.session.remove()
        db.engine.dispose()
    return env, secret, uuids, campaign_id


class EventMix:
    """Request bodies: fresh opens and receipts, repeats of ones already reported, a few unknown messages.

    The bodies are built before the phases (`prepare`), so the load generator's CPU during the measurement is
    spent on HTTP, as for the health baseline, not on making JSON; `distinct` counts only the bodies sent."""

    def __init__(self, uuids: list[str], batch: int, seed: int = 11) -> None:
        self.random = random.Random(seed)
        self.fresh = {"opened": list(uuids), "received": list(uuids)}
        for pool in self.fresh.values():
            self.random.shuffle(pool)
        self.reported: list[tuple[str, str]] = []
        self.batch = batch
        self.bodies: list[bytes] = []
        self.known: list[list[tuple[str, str]]] = []  # per body, its events about existing messages
        self.sent = 0

    def _event(self) -> tuple[dict[str, str], bool]:
        """One event, and whether its message exists."""
        draw = self.random.random()
        if draw < UNKNOWN_SHARE:
            return {"message": str(uuid.uuid4()), "type": "opened"}, False
        if draw < UNKNOWN_SHARE + REPEAT_SHARE and self.reported:
            message, kind = self.random.choice(self.reported)
            return {"message": message, "type": kind}, True
        kind = "opened" if self.random.random() < OPENED_SHARE else "received"
        message = self.fresh[kind].pop()
        self.reported.append((message, kind))
        return {"message": message, "type": kind}, True

    def prepare(self, count: int) -> None:
        """Build `count` more bodies."""
        for _ in range(count):
            events = [self._event() for _ in range(self.batch)]
            self.bodies.append(json.dumps({"events": [event for event, _ in events]}).encode())
            self.known.append([(event["message"], event["type"]) for event, known in events if known])

    def body(self) -> bytes:
        """The next request's JSON (built here only if the prepared ones ran out)."""
        if self.sent == len(self.bodies):
            self.prepare(1000)
        self.sent += 1
        return self.bodies[self.sent - 1]

    def distinct(self, kind: str) -> int:
        """Distinct messages reported with this type in the bodies sent."""
        return len({m for body in self.known[:self.sent] for m, k in body if k == kind})


def _merged(name: str, parts: list[Result]) -> Result:
    """One phase's rounds as one result (rates and CPU per request over all of them)."""
    merged = Result(name)
    for part in parts:
        merged.seconds += part.seconds
        merged.latencies += part.latencies
        merged.errors += part.errors
        merged.server_cpu += part.server_cpu
        merged.client_cpu += part.client_cpu
        for status, count in part.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
    return merged


async def _measure(client: HttpClient, secret: str, mix: EventMix,
                   args: argparse.Namespace) -> tuple[Result, Result, list[float]]:
    """Baseline (health) and events after a short warm-up each, in --rounds alternating pairs of phases (health
    first in even rounds, events first in odd ones), so a change in the shared machine's speed during the run
    weighs on both alike; returns both merged and each round's events/health rate ratio."""
    await _wait_ready(client)
    auth = f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"

    async def health() -> int:
        return await client.send("GET", "/api/v1/health")

    async def events() -> int:
        return await client.send("POST", "/api/v1/events", mix.body(), auth)

    await _run_phase("warm-up", health, client.server_pid, args.concurrency, 1.0, 2000)
    await _run_phase("warm-up", events, client.server_pid, args.concurrency, 1.0, 2000)
    seconds = args.duration / args.rounds
    rounds: dict[str, list[Result]] = {"health": [], "events": []}
    for index in range(args.rounds):
        order = [("health", health), ("events", events)]
        for name, send in order if index % 2 == 0 else reversed(order):
            rounds[name].append(await _run_phase(name, send, client.server_pid, args.concurrency, seconds, 10**7))
    ratios = [e.rate / h.rate for h, e in zip(rounds["health"], rounds["events"], strict=True)]
    return _merged("health", rounds["health"]), _merged("events", rounds["events"]), ratios


def _check(url: str, folder: Path, campaign_id: int, mix: EventMix) -> str:
    """The counts equal the distinct events sent, and a rebuild from the rows changes nothing."""
    app = bench_app(url, folder, create=False)
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        funnel = db.session.get(CampaignRollup, campaign_id)
        hourly = db.session.execute(select(func.sum(HourlyRollup.opened), func.sum(HourlyRollup.received))).one()
        live = (campaign.opened, funnel.opened, funnel.received, int(hourly[0]), int(hourly[1]))
        rollups.rebuild()
        db.session.expire_all()
        funnel = db.session.get(CampaignRollup, campaign_id)
        rebuilt = (funnel.opened, funnel.received)
        db.session.remove()
        db.engine.dispose()
    opened, received = mix.distinct("opened"), mix.distinct("received")
    ok = live == (opened, opened, received, opened, received) and rebuilt == (opened, received)
    return (f"counts: {opened:,} distinct opens and {received:,} receipts sent; campaign.opened {live[0]:,}, rollup "
            f"{live[1]:,}/{live[2]:,}, hourly {live[3]:,}/{live[4]:,}, rebuilt {rebuilt[0]:,}/{rebuilt[1]:,} "
            f"({'ok' if ok else 'MISMATCH'})")


def run(kind: str, args: argparse.Namespace) -> None:
    """Build, serve, load, check, print."""
    load_before = os.getloadavg()[0]
    with bench_database(kind, POSTGRES_SERVER, BENCH_DATABASE) as (url, folder):
        env, secret, uuids, campaign_id = _prepare(url, folder, args.messages)
        mix = EventMix(uuids, args.batch)
        mix.prepare(min(int((args.duration + 1) * 4000), args.messages))  # beyond the rates seen here
        port = _free_port()
        server = _start_gunicorn(env, port, args.workers)
        try:
            baseline, events, ratios = asyncio.run(_measure(HttpClient(port, server.pid), secret, mix, args))
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"[{kind}] gunicorn -w {args.workers} (sync), {args.concurrency} connections, {args.duration:.0f} s per "
              f"phase in {args.rounds} alternating rounds, {args.batch} event(s) per request, {os.cpu_count()} CPUs "
              f"shared with the load generator, load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} "
              "after")
        print(f"[{kind}] {baseline.line()}")
        print(f"[{kind}] {events.line()}")
        ratio, p99 = events.rate / baseline.rate, events.percentile(99)
        rate_met = "met" if events.rate >= TARGET_RATE else "MISSED"
        verdicts = [f"{events.rate:,.0f} req/s (≥ {TARGET_RATE:,.0f}: {rate_met})",
                    f"{ratio:.2f} × health (≥ {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'MISSED'})",
                    f"p99 {p99:.1f} ms (< {TARGET_P99_MS:.0f}: {'met' if p99 < TARGET_P99_MS else 'MISSED'})",
                    f"{events.errors} errors ({'met' if events.errors == 0 else 'MISSED'})"]
        print(f"[{kind}] events: " + "; ".join(verdicts))
        print(f"[{kind}] events/health per round: " + ", ".join(f"{r:.2f}" for r in ratios)
              + f" (median {statistics.median(ratios):.2f})")
        print(f"[{kind}] {_check(url, folder, campaign_id, mix)}")


def main() -> None:
    """Parse options and run on SQLite (and PostgreSQL when asked)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase (all rounds)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating health/events rounds the phases take")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--messages", type=int, default=100_000, help="messages of the campaign events are about")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--batch", type=int, default=1, help="events per request")
    parser.add_argument("--postgres", action="store_true", help="also measure on PostgreSQL (local server)")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], help="measure one backend")
    parser.add_argument("--quick", action="store_true", help="short phases, small campaign (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.messages, args.rounds = 2.0, 20_000, 2
    if args.only != "postgresql":
        run("sqlite", args)
    if args.only == "postgresql" or (args.postgres and args.only is None):
        if postgres_up(POSTGRES_SERVER):
            run("postgresql", args)
        else:
            print("[postgresql] skipped: the server does not answer")


if __name__ == "__main__":
    main()
