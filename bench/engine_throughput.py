"""End-to-end engine throughput with the Debug backend: claim → send → record, messages per second.

Run: .venv/bin/python bench/engine_throughput.py [--size 200000] [--runs 3] [--batch-sizes 500,1000,2000,5000]
     [--quick] [--no-postgres] [--postgres-url URL]
Each run starts a fresh all-devices campaign (materialised, not timed) on an app without channels (so every
platform goes to the Debug backend) and times `webadmin.sending.engine.dispatch` until the campaign is sent:
first one worker thread per batch size, then two threads (each in its own app context, as two consumer threads
would be) at the best batch size. Peer in the same run: the same through PostgreSQL.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from engine_materialize import (
    POSTGRES_SERVER,
    bench_app,
    bench_database,
    build_audience,
    postgres_up,
    reset_messages,
    started_campaign,
)
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from webadmin.extensions import db
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.sending.engine import dispatch
from webadmin.sending.runtime import worker_runtime


def _dispatch_in_threads(app: Flask, campaign_id: int, threads: int) -> list[str]:
    """Run dispatch on `threads` threads at once, each in its own app context; returns why each stopped."""
    stopped: list[str] = []

    def worker() -> None:
        with app.app_context():
            stopped.append(dispatch(campaign_id).stopped_because)
            db.session.remove()
        with worker_runtime() as runtime:  # the thread's kept runtime (ENGINE_KEEP_CONNECTIONS): close it
            runtime.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return stopped


def _check(campaign_id: int, targeted: int) -> None:
    """Every message went out exactly once and the counters agree."""
    db.session.expire_all()
    campaign = db.session.get(Campaign, campaign_id)
    states = dict(db.session.execute(
        select(Message.state, func.count()).where(Message.campaign_id == campaign_id).group_by(Message.state)
    ).all())
    attempts = db.session.scalar(
        select(func.sum(Message.number_of_send_attempts)).where(Message.campaign_id == campaign_id))
    assert campaign is not None and campaign.status == "sent", campaign and campaign.status
    assert states == {"DEBUG": targeted} and campaign.sent == targeted and attempts == targeted, (states, attempts)


def one_run(app: Flask, app_id: int, batch_size: int, threads: int) -> tuple[float, float]:
    """Materialise a campaign, then time its dispatch; returns (messages/s, worker CPU seconds)."""
    reset_messages()
    campaign_id, targeted, _ = started_campaign(app_id)
    db.session.commit()
    app.config["ENGINE_BATCH_SIZE"] = batch_size
    cpu, began = time.process_time(), time.perf_counter()
    stopped = _dispatch_in_threads(app, campaign_id, threads)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    assert "finished" in stopped, stopped
    _check(campaign_id, targeted)
    return targeted / seconds, cpu


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Batch-size sweep with one thread, then two threads at the best size."""
    results: dict[tuple[int, int], list[tuple[float, float]]] = {}
    with bench_database(kind, args.postgres_url) as (url, folder):
        app = bench_app(url, folder)
        with app.app_context():
            app_id = build_audience(args.size)
            for batch in args.batch_sizes:
                results[(batch, 1)] = [one_run(app, app_id, batch, 1) for _ in range(args.runs)]
            best = max(args.batch_sizes, key=lambda b: statistics.median(r[0] for r in results[(b, 1)]))
            results[(best, 2)] = [one_run(app, app_id, best, 2) for _ in range(args.runs)]
            db.session.remove()
            db.engine.dispose()
    return {"kind": kind, "results": results, "best": best}


def median_rate(outcome: dict[str, Any], batch: int, threads: int) -> float:
    """Median messages/s of one configuration."""
    return statistics.median(rate for rate, _ in outcome["results"][(batch, threads)])


def report(args: argparse.Namespace, outcome: dict[str, Any]) -> None:
    """Print one database's table."""
    kind = outcome["kind"]
    print(f"[{kind}] {args.size:,} messages per run, Debug backend, {args.runs} runs per row")
    print(f"[{kind}] {'batch':>6} {'threads':>7} {'msg/s (median)':>15}  runs {'':>22} CPU µs/msg")
    for (batch, threads), runs in outcome["results"].items():
        rates = "/".join(f"{rate:,.0f}" for rate, _ in runs)
        cpu = statistics.median(c for _, c in runs) / args.size * 1e6
        mark = "  <- best" if batch == outcome["best"] and threads == 1 else ""
        print(f"[{kind}] {batch:>6} {threads:>7} {median_rate(outcome, batch, threads):>15,.0f}  {rates:<27} "
              f"{cpu:8.0f}{mark}")


def compare(outcomes: dict[str, dict[str, Any]]) -> None:
    """SQLite against the PostgreSQL peer, and against the target."""
    sqlite = outcomes["sqlite"]
    best = sqlite["best"]
    for threads in (1, 2):
        rate = median_rate(sqlite, best, threads)
        line = f"sqlite, batch {best}, {threads} thread(s): {rate:,.0f} msg/s; target >= 20,000: "
        line += "met" if rate >= 20_000 else "MISSED"
        if "postgresql" in outcomes:
            pg = outcomes["postgresql"]
            peer = median_rate(pg, pg["best"], threads)
            line += f"; PostgreSQL peer (batch {pg['best']}): {peer:,.0f} msg/s, SQLite/PostgreSQL = {rate / peer:.2f}"
        print(line)


def main() -> None:
    """Parse arguments, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200_000, help="messages per campaign")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-sizes", default="500,1000,2000,5000")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run (a smoke test)")
    parser.add_argument("--postgres-url", default=POSTGRES_SERVER, help="PostgreSQL server (a database is created)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.quick:
        args.size, args.runs, args.batch_sizes = 10_000, 1, [1000]
    outcomes: dict[str, dict[str, Any]] = {}
    for kind in ("sqlite", "postgresql"):
        if args.only and kind != args.only:
            continue
        if kind == "postgresql" and (args.no_postgres or not postgres_up(args.postgres_url)):
            print(f"[postgresql] skipped: no server at {make_url(args.postgres_url).host}")
            continue
        outcomes[kind] = measure(kind, args)
        report(args, outcomes[kind])
    if "sqlite" in outcomes:
        compare(outcomes)


if __name__ == "__main__":
    main()
