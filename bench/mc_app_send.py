"""Marketing Cloud "all users": provider calls and end-to-end throughput of ONE messageApp request per campaign,
against messageContact (the peer: the same campaign with the channel's opt-in off) in the same run.

Run: .venv/bin/python bench/mc_app_send.py [--size 60000] [--runs 3] [--batches-per-run 2] [--quick]
     [--postgres] [--postgres-url URL]
The app's Android and iOS channels are Marketing Cloud channels of one MobilePush message (web devices go to
Debug); a fake Marketing Cloud (aiohttp on 127.0.0.1, in a child process) counts token, messageApp and
messageContact requests. Each run starts a fresh all-devices campaign and calls the engine's `dispatch` with
`max_batches` = --batches-per-run until the campaign is sent (so the campaign spans several dispatch runs, as it
would across consumers), then once more with two worker threads at once. Scenarios are interleaved per run;
msg/s = messages of the campaign / wall time of the dispatch runs, database recording included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests" / "providers")]

from engine_materialize import (  # noqa: E402
    POSTGRES_SERVER,
    bench_app,
    bench_database,
    build_audience,
    postgres_up,
    reset_messages,
    started_campaign,
)
from provider_calls import Child, DiscardLog  # noqa: E402
from sqlalchemy import delete, func, select  # noqa: E402

from webadmin.crypto import encrypt_credentials  # noqa: E402
from webadmin.extensions import db  # noqa: E402
from webadmin.models.campaign import CampaignAppSend, Channel  # noqa: E402
from webadmin.models.message import Message  # noqa: E402
from webadmin.providers import marketing_cloud  # noqa: E402
from webadmin.sending.engine import dispatch  # noqa: E402

MESSAGE_ID = "MTIzOjExNDow"
APP = f"/push/v1/messageApp/{MESSAGE_ID}/send"
CONTACT = f"/push/v1/messageContact/{MESSAGE_ID}/send"
TOKEN = "/v2/token"
SCENARIOS = ("messageApp (opt-in)", "messageApp, 2 worker threads", "messageContact (opt-in off, peer)")


def _serve(pipe: Any) -> None:
    """Child-process entry: the fake Marketing Cloud; commands 'stats', 'reset', 'stop' over the pipe."""
    from aiohttp import web
    from fakes import FakeServer, Recorded

    calls: Counter[str] = Counter()
    keys: Counter[str] = Counter()

    def token(rec: Recorded) -> web.Response:
        calls[TOKEN] += 1
        return web.json_response({"access_token": "bench-token", "expires_in": 1079, "token_type": "Bearer"})

    def app_send(rec: Recorded) -> web.Response:
        calls[APP] += 1
        return web.json_response({"tokenId": f"app-{calls[APP]}"}, status=202)

    def contact(rec: Recorded) -> web.Response:
        calls[CONTACT] += 1
        keys.update(rec.json["subscriberKeys"])
        return web.json_response({"tokenId": f"contact-{calls[CONTACT]}"}, status=202)

    async def main() -> None:
        server = FakeServer()
        server.requests = DiscardLog()
        async with server as srv:
            srv.route("POST", TOKEN, token)
            srv.route("POST", APP, app_send)
            srv.route("POST", CONTACT, contact)
            pipe.send(srv.port)
            loop = asyncio.get_running_loop()
            while True:
                command = await loop.run_in_executor(None, pipe.recv)
                if command == "stats":
                    pipe.send((dict(calls), sum(n - 1 for n in keys.values() if n > 1)))
                elif command == "reset":
                    calls.clear()
                    keys.clear()
                    pipe.send(True)
                else:
                    break

    asyncio.run(main())


def _channels(app_id: int, url: str) -> list[Channel]:
    credentials = encrypt_credentials({"client_id": "bench-client", "client_secret": "bench-secret",
                                       "message_id": MESSAGE_ID, "auth_mode": "v2"})
    made = [Channel(app_id=app_id, platform=platform, backend="marketing_cloud", name=f"MC {platform}",
                    credentials_encrypted=credentials, options={"endpoint": url, "auth_endpoint": url})
            for platform in ("android", "ios")]
    db.session.add_all(made)
    db.session.commit()
    return made


def _set_opt_in(channels: list[Channel], on: bool) -> None:
    for channel in channels:
        options = {k: v for k, v in (channel.options or {}).items() if k != "all_users_app"}
        channel.options = {**options, "all_users_app": True} if on else options
    db.session.commit()


def _dispatch_runs(campaign_id: int, per_run: int) -> int:
    """Dispatch until sent, `per_run` batches a run; returns the number of runs."""
    runs = 0
    while True:
        runs += 1
        if dispatch(campaign_id, max_batches=per_run).stopped_because == "finished":
            return runs


def _dispatch_threads(app: Any, campaign_id: int) -> int:
    """Two worker threads at once, then one more run for rows a waiting thread gave back."""
    def worker() -> None:
        with app.app_context():
            dispatch(campaign_id)
            db.session.remove()

    pool = [threading.Thread(target=worker) for _ in range(2)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    runs = 2
    while dispatch(campaign_id).stopped_because not in ("finished", "campaign sent"):
        runs += 1
        time.sleep(0.2)
    return runs


def _one(app: Any, fake: Child, app_id: int, channels: list[Channel], scenario: str, per_run: int) -> dict[str, Any]:
    reset_messages()
    db.session.execute(delete(CampaignAppSend))
    db.session.commit()
    marketing_cloud.clear_token_cache()
    marketing_cloud.LEDGER.clear()
    _set_opt_in(channels, not scenario.startswith("messageContact"))
    fake.ask("reset")
    campaign_id, targeted, _ = started_campaign(app_id)
    began = time.perf_counter()
    if "threads" in scenario:
        runs = _dispatch_threads(app, campaign_id)
    else:
        runs = _dispatch_runs(campaign_id, per_run)
    seconds = time.perf_counter() - began
    calls, twice = fake.ask("stats")
    m = Message.__table__
    states = dict(db.session.execute(select(m.c.state, func.count()).where(m.c.campaign_id == campaign_id)
                                     .group_by(m.c.state)).all())
    ids = db.session.scalar(select(func.count(func.distinct(m.c.provider_message_id)))
                            .where(m.c.campaign_id == campaign_id, m.c.state == "SENT"))
    return {"messages": targeted, "seconds": seconds, "msgs": targeted / seconds, "runs": runs,
            "app": calls.get(APP, 0), "contact": calls.get(CONTACT, 0), "token": calls.get(TOKEN, 0),
            "twice": twice, "states": states, "ids": ids}


def measure(kind: str, args: argparse.Namespace) -> None:
    with bench_database(kind, args.postgres_url, "webadmin_bench_mcapp") as (url, folder):
        config = {"ENGINE_KEEP_CONNECTIONS": False, "ENGINE_BATCH_SIZE": args.batch}
        app = bench_app(url, folder, **config)
        fake = Child(_serve)
        try:
            with app.app_context():
                app_id = build_audience(args.size)
                channels = _channels(app_id, f"http://127.0.0.1:{fake.port}")
                results: dict[str, list[dict[str, Any]]] = {s: [] for s in SCENARIOS}
                for run in range(args.runs):
                    order = SCENARIOS if run % 2 == 0 else tuple(reversed(SCENARIOS))
                    for scenario in order:
                        results[scenario].append(_one(app, fake, app_id, channels, scenario, args.batches_per_run))
                report(kind, args, results)
                db.session.remove()
        finally:
            fake.stop()
            with app.app_context():
                db.engine.dispose()


def report(kind: str, args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> None:
    load = os.getloadavg()[0]
    print(f"\n{kind}: {args.size:,} devices (android/ios/web), claim {args.batch:,}, runs {args.runs}, "
          f"load average {load:.1f}")
    print("| scenario | messages | messageApp calls | messageContact calls | token calls | provider ids | "
          "dispatch runs | msg/s median (runs) |")
    print("|---|---|---|---|---|---|---|---|")
    peer = statistics.median(r["msgs"] for r in results[SCENARIOS[-1]])
    for scenario, runs in results.items():
        last = runs[-1]
        rates = "/".join(f"{r['msgs']:,.0f}" for r in runs)
        apps = sorted({r["app"] for r in runs})
        contacts = sorted({r["contact"] for r in runs})
        print(f"| {scenario} | {last['messages']:,} | {'/'.join(map(str, apps))} | {'/'.join(map(str, contacts))} "
              f"| {last['token']} | {last['ids']} | {last['runs']} | "
              f"{statistics.median(r['msgs'] for r in runs):,.0f} ({rates}) |")
        print(f"|   states {last['states']}, keys received twice {last['twice']} |")
    best = statistics.median(r["msgs"] for r in results[SCENARIOS[0]])
    print(f"ratio messageApp / messageContact throughput: {best / peer:.2f}")
    ok = all(r["app"] == 1 and r["contact"] == 0 for s in SCENARIOS[:2] for r in results[s])
    print(f"all-users calls = 1 in every messageApp run: {'met' if ok else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=60_000, help="active devices (a third each android/ios/web)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="ENGINE_BATCH_SIZE (claims are ≥ 5,000 here)")
    parser.add_argument("--batches-per-run", type=int, default=2, help="max_batches of each dispatch run")
    parser.add_argument("--quick", action="store_true", help="6,000 devices, one run")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument("--postgres-url", default=POSTGRES_SERVER)
    args = parser.parse_args()
    if args.quick:
        args.size, args.runs = 6_000, 1
    measure("sqlite", args)
    if args.postgres:
        if postgres_up(args.postgres_url):
            measure("postgresql", args)
        else:
            print("PostgreSQL is not answering: skipped")


if __name__ == "__main__":
    main()
