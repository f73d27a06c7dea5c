"""Provider call counts: OneSignal ⌈N/batch⌉, Marketing Cloud ⌈N/5,000⌉ (one send per subscriber key), one APNs
JWT per renewal period — through each backend's send path, against local fakes in a child process.

Run: .venv/bin/python bench/provider_calls.py [--onesignal 100000] [--marketing-cloud 50000] [--apns 3000] [--runs 3]
Messages are built as the engine builds them (a campaign UUID, data with the per-message `messageId`, a subscriber
key per device) and handed to `send_batch` in slices of the backend's batch size, as the engine does with a claimed
batch at least that large. The fakes (tests/providers/fakes.py and apns_fake.py, aiohttp and h2 on 127.0.0.1) count
the requests, the ids in them and the ids received twice; their CPU is reported so a saturated fake shows.
CPU = this process's CPU time per message.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "providers")]

from apns_fake import make_signing_key, make_tls_files, serve_in_process  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from webadmin.providers import apns, create_backend, default_options, marketing_cloud  # noqa: E402
from webadmin.providers.base import PushBackend, PushMessage, SendResult  # noqa: E402

ONESIGNAL = "/notifications"
MC_MESSAGE = "MTIzOjExNDow"
MC_CONTACT = f"/push/v1/messageContact/{MC_MESSAGE}/send"
MC_TOKEN = "/v2/token"
APNS_SPAN_MINUTES = 180  # simulated sending time of the APNs run: batches every 10 minutes
APNS_STEP_MINUTES = 10


# ---- the HTTP fake (child process)


def _serve_http(pipe: Any) -> None:
    """Child-process entry: OneSignal and Marketing Cloud fakes; commands 'stats', 'reset', 'stop' over the pipe."""
    from aiohttp import web
    from fakes import FakeServer, Recorded, reply

    ids: Counter[str] = Counter()
    calls: Counter[str] = Counter()

    def onesignal(rec: Recorded) -> web.Response:
        subscriptions = rec.json["include_subscription_ids"]
        ids.update(subscriptions)
        calls[ONESIGNAL] += 1
        return web.json_response({"id": str(uuid.uuid4()), "external_id": None})

    def contact(rec: Recorded) -> web.Response:
        ids.update(rec.json["subscriberKeys"])
        calls[MC_CONTACT] += 1
        return web.json_response({"tokenId": str(uuid.uuid4())}, status=202)

    def token(rec: Recorded) -> Any:
        calls[MC_TOKEN] += 1
        return reply({"access_token": "bench-token", "expires_in": 1079, "token_type": "Bearer"})(rec)

    async def main() -> None:
        server = FakeServer()
        server.requests = DiscardLog()  # counting only: recorded bodies of 100k ids would be the fake's memory
        async with server as srv:
            srv.route("POST", ONESIGNAL, onesignal)
            srv.route("POST", MC_CONTACT, contact)
            srv.route("POST", MC_TOKEN, token)
            pipe.send(srv.port)
            loop = asyncio.get_running_loop()
            while True:
                command = await loop.run_in_executor(None, pipe.recv)
                if command == "stats":
                    pipe.send((dict(calls), len(ids), sum(n - 1 for n in ids.values() if n > 1), time.process_time()))
                elif command == "reset":
                    ids.clear()
                    calls.clear()
                    pipe.send(True)
                else:
                    break

    asyncio.run(main())


class DiscardLog(list):  # type: ignore[type-arg]
    """A request log that keeps nothing."""

    def append(self, item: Any) -> None:
        """Drop the request."""


class Child:
    """A fake in a child process, driven over a pipe."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(*args, child), daemon=True)
        self.proc.start()
        self.port = int(self.pipe.recv())

    def ask(self, command: str) -> Any:
        """Send a command, return the answer."""
        self.pipe.send(command)
        return self.pipe.recv()

    def stop(self) -> None:
        """Stop the child."""
        self.pipe.send("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


def _serve_apns(tls: Any, public_pem: bytes, pipe: Any) -> None:
    """Child-process entry of the fake APNs (argument order for Child)."""
    serve_in_process(tls, pipe, public_pem)


# ---- messages as the engine builds them


def engine_messages(n: int, platform: str, *, keys: Callable[[int], str] | None = None,
                    offset: int = 0) -> list[PushMessage]:
    """n messages of one campaign: per-message uuid and data messageId, token t<i>, subscriber key k<i>."""
    campaign = "5f0c1d7e-3b2a-4c59-9e61-2d7f8a0b4c13"
    out = []
    for i in range(offset, offset + n):
        message_uuid = f"5f0c1d7e-3b2a-8c59-8000-{i:012x}"
        out.append(PushMessage(message_id=i + 1, uuid=message_uuid, token=f"t{i}", platform=platform,
                               body="Exclusive offer", title="Nibs", open_direct="nibs://offer/42",
                               data={"screen": "offers", "messageId": message_uuid},
                               recipient=keys(i) if keys else f"k{i}", campaign_uuid=campaign))
    return out


async def send_all(backend: PushBackend, messages: list[PushMessage]) -> list[SendResult]:
    """Hand the messages to the backend in slices of its batch size (what the engine does per claimed batch)."""
    size = max(1, backend.options.batch_size)
    results: list[SendResult] = []
    try:
        for start in range(0, len(messages), size):
            results.extend(await backend.send_batch(messages[start:start + size]))
    finally:
        await backend.close()
    return results


# ---- scenarios


@dataclass
class Row:
    """One scenario's measurements over its runs."""

    name: str
    expected: int
    note: str = ""
    calls: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    fake_cpu_us: list[float] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def timed(coro: Coroutine[Any, Any, list[SendResult]]) -> tuple[list[SendResult], float, float]:
    """Run a send; (results, wall seconds, CPU seconds of this process)."""
    started, cpu = time.perf_counter(), time.process_time()
    results = asyncio.run(coro)
    return results, time.perf_counter() - started, time.process_time() - cpu


def http_run(fake: Child, row: Row, coro: Coroutine[Any, Any, list[SendResult]], n: int, path: str) -> None:
    """One run against the HTTP fake: calls on `path`, rate, CPU, ids received twice."""
    fake.ask("reset")
    _, _, _, fake_cpu0 = fake.ask("stats")
    results, wall, cpu = timed(coro)
    calls, _, duplicates, fake_cpu = fake.ask("stats")
    row.calls.append(calls.get(path, 0))
    row.rates.append(n / wall)
    row.cpu_us.append(cpu / n * 1e6)
    row.fake_cpu_us.append((fake_cpu - fake_cpu0) / n * 1e6)
    row.duplicates.append(duplicates)
    row.failed.append(sum(1 for r in results if not r.ok))


def onesignal_run(fake: Child, row: Row, n: int, batch_size: int | None) -> None:
    """OneSignal: n android messages with the channel's default or a given batch size."""
    sized = {"batch_size": batch_size} if batch_size else {}
    options = default_options("onesignal", endpoint=f"http://127.0.0.1:{fake.port}", **sized)
    backend = create_backend("onesignal", {"app_id": "app", "api_key": "key"}, options)
    http_run(fake, row, send_all(backend, engine_messages(n, "android")), n, ONESIGNAL)


def mc_options(fake: Child) -> Any:
    """Marketing Cloud options: auth and REST on the fake."""
    url = f"http://127.0.0.1:{fake.port}"
    return default_options("marketing_cloud", endpoint=url, auth_endpoint=url)


def mc_run(fake: Child, row: Row, n: int) -> None:
    """Marketing Cloud: n messages to n distinct subscriber keys through one channel."""
    marketing_cloud.clear_token_cache()
    marketing_cloud.LEDGER.clear()
    backend = create_backend("marketing_cloud", {"client_id": "c", "client_secret": "s", "message_id": MC_MESSAGE},
                             mc_options(fake))
    http_run(fake, row, send_all(backend, engine_messages(n, "android")), n, MC_CONTACT)


def mc_two_devices_run(fake: Child, row: Row, n: int) -> None:
    """Marketing Cloud: n subscribers on the Android channel, a fifth of them also on the iOS channel (same app)."""
    marketing_cloud.clear_token_cache()
    marketing_cloud.LEDGER.clear()
    creds = {"client_id": "c", "client_secret": "s", "message_id": MC_MESSAGE}
    android = engine_messages(n, "android")
    ios = engine_messages(n // 5, "ios", keys=lambda i: f"k{(i - n) * 5}", offset=n)

    async def both() -> list[SendResult]:
        first = await send_all(create_backend("marketing_cloud", creds, mc_options(fake)), android)
        return first + await send_all(create_backend("marketing_cloud", creds, mc_options(fake)), ios)

    http_run(fake, row, both(), n + n // 5, MC_CONTACT)


def apns_run(row: Row, n: int) -> None:
    """APNs token auth: n pushes in batches every 10 simulated minutes over 3 hours; count the JWTs APNs saw."""
    with tempfile.TemporaryDirectory() as tmp:
        tls = make_tls_files(Path(tmp))
        key_pem, public_key = make_signing_key()
        public_pem = public_key.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        fake = Child(_serve_apns, tls, public_pem)
        try:
            creds = {"auth_mode": "token", "environment": "sandbox", "team_id": "TEAM123456",
                     "key_id": uuid.uuid4().hex[:10].upper(), "private_key": key_pem, "bundle_id": "com.example"}
            options = default_options("apns", endpoint=f"https://127.0.0.1:{fake.port}", ca_file=tls.ca_file)
            backend = create_backend("apns", creds, options)
            messages = engine_messages(n, "ios")
            steps = APNS_SPAN_MINUTES // APNS_STEP_MINUTES
            per_step = math.ceil(n / steps)
            base = time.time()
            real_now = apns._now

            async def spread() -> list[SendResult]:
                results: list[SendResult] = []
                try:
                    for step in range(steps):
                        apns._now = lambda at=base + step * APNS_STEP_MINUTES * 60: at  # type: ignore[misc]
                        results += await backend.send_batch(messages[step * per_step:(step + 1) * per_step])
                finally:
                    apns._now = real_now
                    await backend.close()
                return results

            _, _, fake_cpu0 = fake.ask("stats")
            results, wall, cpu = timed(spread())
            _, connections, fake_cpu = fake.ask("stats")
            row.calls.append(int(fake.ask("jwts")))
            row.rates.append(n / wall)
            row.cpu_us.append(cpu / n * 1e6)
            row.fake_cpu_us.append((fake_cpu - fake_cpu0) / n * 1e6)
            row.duplicates.append(0)
            row.failed.append(sum(1 for r in results if not r.ok))
            row.note = f"{connections} connection(s)"
        finally:
            fake.stop()


# ---- report


def med(values: list[float]) -> float:
    """Median (0 when empty)."""
    return statistics.median(values) if values else 0.0


def report(rows: list[Row]) -> None:
    """One markdown table: calls against the expected count, rates, CPU, duplicates."""
    print("| scenario | calls (expected) | ratio | msg/s (runs) | CPU µs/msg | fake CPU µs/msg | ids twice | failed |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        calls = int(med([float(c) for c in row.calls]))
        ratio = calls / row.expected if row.expected else 0
        runs = "/".join(f"{r:,.0f}" for r in row.rates)
        print(f"| {row.name} | {calls:,} ({row.expected:,}) | {ratio:.2f} | {med(row.rates):,.0f} ({runs}) | "
              f"{med(row.cpu_us):.0f} | {med(row.fake_cpu_us):.0f} | {max(row.duplicates, default=0)} | "
              f"{max(row.failed, default=0)} |" + (f" {row.note}" if row.note else ""))


def main() -> None:
    """Parse arguments, run every scenario `--runs` times (interleaved), print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onesignal", type=int, default=100_000, help="OneSignal messages per run")
    parser.add_argument("--marketing-cloud", type=int, default=50_000, help="Marketing Cloud messages per run")
    parser.add_argument("--apns", type=int, default=3_000, help="APNs pushes per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    args = parser.parse_args()
    if args.quick:
        args.onesignal, args.marketing_cloud, args.apns, args.runs = 10_000, 10_000, 360, 1
    n_os, n_mc = args.onesignal, args.marketing_cloud
    rows = {
        "os": Row(f"OneSignal, {n_os:,} messages, batch 2,000 (default)", math.ceil(n_os / 2_000)),
        "os_max": Row(f"OneSignal, {n_os:,} messages, batch 20,000 (max)", math.ceil(n_os / 20_000)),
        "mc": Row(f"Marketing Cloud, {n_mc:,} keys", math.ceil(n_mc / 5_000)),
        "mc2": Row(f"Marketing Cloud, {n_mc:,} keys + {n_mc // 5:,} second devices on the iOS channel",
                   math.ceil(n_mc / 5_000)),
        "apns": Row(f"APNs token auth, {args.apns:,} pushes over {APNS_SPAN_MINUTES} simulated minutes (JWTs)",
                    math.ceil(APNS_SPAN_MINUTES * 60 / apns.JWT_RENEW_AFTER)),
    }
    fake = Child(_serve_http)
    try:
        for _ in range(args.runs):
            onesignal_run(fake, rows["os"], n_os, None)
            onesignal_run(fake, rows["os_max"], n_os, 20_000)
            mc_run(fake, rows["mc"], n_mc)
            mc_two_devices_run(fake, rows["mc2"], n_mc)
            apns_run(rows["apns"], args.apns)
    finally:
        fake.stop()
    report(list(rows.values()))


if __name__ == "__main__":
    main()
