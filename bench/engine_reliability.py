"""Reliability at full size with real consumer processes: a SIGKILL loop (SQLite + its SQLite queue) and several
consumers on one campaign (PostgreSQL + Redis). Lost messages, duplicates and stuck rows are counted from the
database and the Debug backend's delivery journal (one line "<message uuid> <pid>" per delivery).

Run: .venv/bin/python bench/engine_reliability.py [--devices 100000] [--kills 10] [--batch 500] [--delay-ms 250]
     [--consumers 4] [--threads 2] [--only sigkill|consumers] [--quick] [--no-postgres] [--postgres-url URL]
     [--redis-url URL]

The consumers are `flask --app webadmin worker` subprocesses (tests/sending/consumers.py, shared with
tests/sending/test_reliability.py, which runs the same two scenarios at CI sizes). The SIGKILL loop starts a
consumer, lets it deliver, kills it at a random moment within ~8 batches, and sweeps (as the per-minute task
does) until the next consumer delivers; after the last kill one consumer finishes the campaign. The PostgreSQL
database is `webadmin_bench_engine_reliability` (created and dropped here); the Redis database of `--redis-url`
(default: WEBADMIN_BENCH_REDIS_URL, else WEBADMIN_TEST_REDIS_URL) is FLUSHED before and after.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from tests.sending.consumers import (  # noqa: E402
    UNRECORDED_PER_THREAD,
    Consumers,
    campaign_sent,
    consumer_env,
    journal_entries,
    kill_mid_campaign,
    make_campaign,
    queue_app,
    scratch_postgres,
    scratch_redis,
    wait_for,
)
from webadmin.extensions import db  # noqa: E402
from webadmin.models.campaign import Campaign  # noqa: E402
from webadmin.models.message import PENDING_STATES, Message  # noqa: E402
from webadmin.services import campaigns  # noqa: E402

POSTGRES_SERVER = os.environ.get("WEBADMIN_BENCH_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
DATABASE = "webadmin_bench_engine_reliability"  # this bench's own (other benches use their own names)


@dataclass
class Tally:
    """What became of a campaign's messages."""

    targeted: int
    delivered_once: int
    lost: int  # targeted devices whose message never reached the provider, or is not DEBUG
    duplicates: int  # messages delivered more than once
    extra_deliveries: int
    stuck: int  # pending or still leased after the campaign was sent
    reclaimed: int  # claimed more than once
    per_consumer: Counter[int]
    status: str

    def line(self) -> str:
        """One line of figures."""
        return (f"targeted {self.targeted:,}, delivered once {self.delivered_once:,}, LOST {self.lost:,}, "
                f"DUPLICATES {self.duplicates:,} ({self.extra_deliveries:,} extra deliveries), stuck {self.stuck:,}, "
                f"claimed more than once {self.reclaimed:,}; campaign {self.status}")


def tally(campaign_id: int, journal: Path) -> Tally:
    """Count from the rows and the journal (no assertion: the bench reports what it finds)."""
    db.session.commit()
    rows = db.session.execute(select(Message.uuid, Message.state, Message.number_of_send_attempts,
                                     Message.lease_until).where(Message.campaign_id == campaign_id)).all()
    entries = journal_entries(journal)
    deliveries = Counter(u for u, _ in entries)
    lost = sum(1 for r in rows if r.state != "DEBUG" or deliveries[r.uuid] == 0)
    stuck = sum(1 for r in rows if r.state in PENDING_STATES or r.lease_until is not None)
    status = db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id)) or "?"
    return Tally(len(rows), sum(1 for n in deliveries.values() if n == 1), lost,
                 sum(1 for n in deliveries.values() if n > 1), sum(n - 1 for n in deliveries.values() if n > 1),
                 stuck, sum(1 for r in rows if r.number_of_send_attempts > 1),
                 Counter(pid for _, pid in entries), status)


def sigkill_loop(args: argparse.Namespace) -> None:
    """Kill a consumer `--kills` times mid-campaign on SQLite; one more consumer finishes it."""
    lease = max(3.0, 4 * args.delay_ms / 1000)
    with tempfile.TemporaryDirectory(prefix="webadmin-reliability-") as tmp:
        folder, journal = Path(tmp), Path(tmp) / "journal.txt"
        env = consumer_env(folder / "instance", f"sqlite:///{folder / 'webadmin.sqlite3'}", lease_seconds=lease,
                           batch_size=args.batch)
        app = queue_app(None, env)
        seed = args.seed if args.seed is not None else random.randrange(2**32)
        began = time.monotonic()
        with app.app_context(), Consumers(env, folder) as pool:
            db.create_all()
            campaign_id = make_campaign(args.devices, delay_ms=args.delay_ms, journal=str(journal))
            campaigns.start(db.session.get(Campaign, campaign_id), actor="bench")
            rng = random.Random(seed)
            rounds = [kill_mid_campaign(pool, journal, rng, args.delay_ms) for _ in range(args.kills)]
            pool.start(args.threads)
            wait_for(campaign_sent(campaign_id, sweep_every=lease), args.timeout, "the campaign to be sent",
                     pool.check_alive)
            figures = tally(campaign_id, journal)
        print(f"SIGKILL loop: seed {seed}, {args.kills} kills of a {args.threads}-thread consumer, {args.devices:,} "
              f"devices, batches of {args.batch}, {args.delay_ms:g} ms per batch, lease {lease:g} s; "
              f"{time.monotonic() - began:.1f} s in all; boot to first delivery "
              f"{', '.join(f'{b:.1f}' for _, b in rounds)} s")
        print("  " + figures.line())
        bound = args.kills * UNRECORDED_PER_THREAD * args.batch * args.threads
        print(f"  extra deliveries ≤ kills × {UNRECORDED_PER_THREAD} batches × threads = {bound:,}: "
              f"{'yes' if figures.extra_deliveries <= bound else 'NO'}")


def consumers_on_postgres(args: argparse.Namespace) -> None:
    """`--consumers` consumers on PostgreSQL + Redis share one campaign; count duplicates and who worked."""
    url = args.redis_url
    if not url:
        print("several consumers: skipped (no Redis URL: --redis-url or WEBADMIN_BENCH_REDIS_URL)")
        return
    with tempfile.TemporaryDirectory(prefix="webadmin-reliability-") as tmp, \
            scratch_postgres(args.postgres_url, DATABASE) as database_url, scratch_redis(url) as queue_url:
        folder, journal = Path(tmp), Path(tmp) / "journal.txt"
        fanout = args.consumers * args.threads
        env = consumer_env(folder / "instance", database_url, queue_url, batch_size=args.batch, dispatch_fanout=fanout)
        app = queue_app(None, env)
        with app.app_context(), Consumers(env, folder) as pool:
            try:
                db.create_all()
                campaign_id = make_campaign(args.devices, delay_ms=args.delay_ms, journal=str(journal))
                pids = {pool.start(args.threads).pid for _ in range(args.consumers)}
                wait_for(pool.started, 60, "the consumers to start", pool.check_alive)
                began = time.monotonic()
                campaigns.start(db.session.get(Campaign, campaign_id), actor="bench")
                wait_for(campaign_sent(campaign_id), args.timeout, "the campaign to be sent", pool.check_alive)
                elapsed = time.monotonic() - began
                figures = tally(campaign_id, journal)
            finally:
                db.session.remove()
                db.engine.dispose()
    print(f"{args.consumers} consumers × {args.threads} threads on PostgreSQL + Redis: {args.devices:,} devices, "
          f"batches of {args.batch}, {args.delay_ms:g} ms per batch: {elapsed:.1f} s "
          f"({args.devices / elapsed:,.0f} msg/s)")
    print("  " + figures.line())
    worked = sorted(figures.per_consumer.get(pid, 0) for pid in pids)
    print(f"  deliveries per consumer: {', '.join(f'{n:,}' for n in worked)}")


def main() -> None:
    """Parse arguments and run the scenarios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--batch", type=int, default=500, help="WEBADMIN_ENGINE_BATCH_SIZE of the consumers")
    parser.add_argument("--delay-ms", type=float, default=250, help="the Debug backend's round trip per batch")
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="worker threads per consumer")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for a campaign")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--only", choices=["sigkill", "consumers"])
    parser.add_argument("--quick", action="store_true", help="CI sizes (a smoke test)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the scenario on PostgreSQL + Redis")
    parser.add_argument("--postgres-url", default=POSTGRES_SERVER, help="PostgreSQL server (a database is created)")
    parser.add_argument("--redis-url", default=os.environ.get("WEBADMIN_BENCH_REDIS_URL")
                        or os.environ.get("WEBADMIN_TEST_REDIS_URL"), help="Redis database to use (flushed)")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.kills, args.batch = 3000, 3, 50
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start", flush=True)
    if args.only in (None, "sigkill"):
        sigkill_loop(args)
    if args.only in (None, "consumers") and not args.no_postgres:
        consumers_on_postgres(args)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
