"""Measure HTTP/2 clients against the local fake APNs: msg/s over ONE connection with many concurrent streams.

Run: .venv/bin/python bench/apns_clients.py [-n 20000] [-c 200] [--runs 3] [--clients own,backend,httpx,...]
The fake runs in a child process (its own core); only 127.0.0.1 is used. Candidates that are not installed
are skipped (install them in a throwaway place, e.g. pip install --target DIR ..., and set PYTHONPATH=DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "providers")]

from apns_fake import TlsFiles, make_signing_key, make_tls_files, serve_in_process  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from webadmin.providers import apns  # noqa: E402
from webadmin.providers.base import ProviderOptions, PushMessage  # noqa: E402

TOPIC = "com.example.app"


@dataclass(slots=True)
class Job:
    """What every candidate sends: N pushes with one JWT, at most `concurrency` streams at a time."""

    url: str
    tls: TlsFiles
    bearer: str
    key_pem: str
    messages: list[PushMessage]
    concurrency: int

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the fake's throwaway CA, ALPN h2."""
        ctx = ssl.create_default_context(cafile=self.tls.ca_file)
        ctx.set_alpn_protocols(["h2"])
        return ctx

    def plain_headers(self, msg: PushMessage) -> dict[str, str]:
        """The APNs request headers as a plain dict (for generic HTTP clients)."""
        built = apns.build_headers(msg, "x", TOPIC, self.bearer)
        return {name: value for name, value in built if not name.startswith(":")}

    @staticmethod
    def body(msg: PushMessage) -> bytes:
        """The JSON payload."""
        return apns.json.dumps(apns.build_payload(msg), separators=(",", ":")).encode()


async def _bounded(job: Job, send: Callable[[PushMessage], Awaitable[int]]) -> int:
    slots = asyncio.Semaphore(job.concurrency)

    async def one(msg: PushMessage) -> int:
        async with slots:
            return await send(msg)

    statuses = await asyncio.gather(*(one(msg) for msg in job.messages))
    return sum(1 for status in statuses if status == 200)


async def run_own(job: Job) -> int:
    """webadmin's own h2 client (H2Client), the transport ApnsBackend uses."""
    client = await apns.open_h2(job.url, job.ssl_context(), 30.0)

    async def send(msg: PushMessage) -> int:
        headers = apns.build_headers(msg, client.authority, TOPIC, job.bearer)
        return (await client.request(headers, job.body(msg), 30.0)).status

    try:
        return await _bounded(job, send)
    finally:
        await client.aclose()


async def run_backend(job: Job) -> int:
    """The whole ApnsBackend.send_batch path (payload, JWT, classification) on the own client."""
    creds = {"auth_mode": "token", "team_id": "TEAMBENCH01", "key_id": "KEYBENCH01",
             "private_key": job.key_pem, "bundle_id": TOPIC}
    options = ProviderOptions(endpoint=job.url, ca_file=job.tls.ca_file, timeout=30.0,
                              concurrency=job.concurrency)
    backend = apns.ApnsBackend(creds, options)
    try:
        results = await backend.send_batch(job.messages)
    finally:
        await backend.close()
    return sum(1 for result in results if result.ok)


async def run_httpx(job: Job) -> int:
    """httpx[http2] AsyncClient, one connection (max_connections=1)."""
    import httpx

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(http2=True, verify=job.ssl_context(), limits=limits, timeout=30.0) as client:

        async def send(msg: PushMessage) -> int:
            url = f"{job.url}/3/device/{msg.token}"
            resp = await client.post(url, headers=job.plain_headers(msg), content=job.body(msg))
            return resp.status_code

        return await _bounded(job, send)


async def run_niquests(job: Job) -> int:
    """niquests AsyncSession, multiplexed=True (lazy responses + gather), HTTP/2 only, one connection."""
    import niquests

    ok = 0
    async with niquests.AsyncSession(multiplexed=True, disable_http1=True, disable_http3=True,
                                     pool_connections=1, pool_maxsize=1, verify=job.tls.ca_file) as session:
        for start in range(0, len(job.messages), job.concurrency):
            chunk = job.messages[start:start + job.concurrency]
            lazy = [await session.post(f"{job.url}/3/device/{msg.token}", headers=job.plain_headers(msg),
                                       data=job.body(msg), verify=job.tls.ca_file) for msg in chunk]
            await session.gather()
            ok += sum(1 for resp in lazy if resp.status_code == 200)
    return ok


async def run_curl(job: Job) -> int:
    """curl_cffi AsyncSession (libcurl + nghttp2), HTTP/2 over TLS, PIPEWAIT and one host connection."""
    from curl_cffi import CurlMOpt, CurlOpt
    from curl_cffi.requests import AsyncSession

    async with AsyncSession(max_clients=job.concurrency, http_version="v2tls", verify=job.tls.ca_file,
                            curl_options={CurlOpt.PIPEWAIT: 1}) as session:
        session.acurl.setopt(CurlMOpt.MAX_HOST_CONNECTIONS, 1)

        async def send(msg: PushMessage) -> int:
            url = f"{job.url}/3/device/{msg.token}"
            resp = await session.post(url, headers=job.plain_headers(msg), data=job.body(msg), timeout=30)
            return resp.status_code

        return await _bounded(job, send)


CANDIDATES: dict[str, tuple[str, Callable[[Job], Awaitable[int]]]] = {
    "own": ("own h2 client (h2 + asyncio Protocol)", run_own),
    "backend": ("ApnsBackend.send_batch (own client, full path)", run_backend),
    "httpx": ("httpx[http2] 0.28 AsyncClient", run_httpx),
    "niquests": ("niquests AsyncSession multiplexed", run_niquests),
    "curl": ("curl_cffi AsyncSession (libcurl)", run_curl),
}


@dataclass(slots=True)
class Outcome:
    """Per-candidate measurements."""

    rates: list[float] = field(default_factory=list)
    fake_caps: list[float] = field(default_factory=list)
    client_us: list[float] = field(default_factory=list)  # client-process CPU microseconds per push
    connections: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class FakeProcess:
    """The fake APNs in a child process, with 'stats' over a pipe."""

    def __init__(self, tls: TlsFiles, public_pem: bytes) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve_in_process, args=(tls, child, public_pem), daemon=True)
        self.proc.start()
        self.port = int(self.pipe.recv())

    def stats(self) -> tuple[int, int, float]:
        """(requests handled, connections accepted, fake process CPU seconds) so far."""
        self.pipe.send("stats")
        handled, conns, cpu = self.pipe.recv()
        return int(handled), int(conns), float(cpu)

    def stop(self) -> None:
        """Stop the child."""
        self.pipe.send("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


def measure(fake: FakeProcess, job: Job, runner: Callable[[Job], Awaitable[int]], outcome: Outcome) -> None:
    """One timed run of one candidate."""
    handled0, conns0, cpu0 = fake.stats()
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        ok = asyncio.run(runner(job))
    except Exception as exc:  # a candidate failing is a result, not the end of the benchmark
        outcome.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        return
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    outcome.client_us.append(cpu / len(job.messages) * 1e6)
    handled1, conns1, cpu1 = fake.stats()
    if ok != len(job.messages):
        outcome.errors.append(f"{ok}/{len(job.messages)} ok")
    outcome.rates.append(ok / elapsed)
    outcome.fake_caps.append((handled1 - handled0) / max(cpu1 - cpu0, 1e-9))
    outcome.connections.append(conns1 - conns0)


def make_job(url: str, tls: TlsFiles, key_pem: str, count: int, concurrency: int) -> Job:
    """Signed JWT and N messages (realistic sizes: 64-hex tokens, uuid, title/body/openDirect/data)."""
    bearer = apns._TokenAuth(key_pem, "KEYBENCH01", "TEAMBENCH01").bearer()
    messages = [
        PushMessage(message_id=i, uuid=str(uuid.uuid4()), token=uuid.uuid4().hex + uuid.uuid4().hex,
                    platform="ios", title="Weekend sale", body="Up to 30% off everything this weekend.",
                    open_direct="myapp://sale", data={"campaign": "wk47"}, ttl=3600)
        for i in range(count)
    ]
    return Job(url, tls, bearer, key_pem, messages, concurrency)


def run_all(args: argparse.Namespace, names: list[str]) -> dict[str, Outcome]:
    """Start the fake, warm up each candidate, then interleave the timed runs."""
    outcomes: dict[str, Outcome] = {name: Outcome() for name in names}
    with tempfile.TemporaryDirectory(prefix="apns-bench-") as tmp:
        tls = make_tls_files(Path(tmp))
        key_pem, public_key = make_signing_key()
        public_pem = public_key.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        fake = FakeProcess(tls, public_pem)
        try:
            job = make_job(f"https://127.0.0.1:{fake.port}", tls, key_pem, args.n, args.c)
            warm = make_job(job.url, tls, key_pem, min(500, args.n), args.c)
            for name in names:
                measure(fake, warm, CANDIDATES[name][1], Outcome())
            for _ in range(args.runs):
                for name in names:
                    measure(fake, job, CANDIDATES[name][1], outcomes[name])
        finally:
            fake.stop()
    return outcomes


def available(requested: list[str]) -> list[str]:
    """Candidates whose library imports here."""
    modules = {"httpx": "h2", "niquests": "niquests", "curl": "curl_cffi"}
    names = []
    for name in requested:
        try:
            __import__(modules.get(name, "h2"))
            if name == "httpx":
                __import__("httpx")
        except ImportError:
            print(f"skip {name}: not installed")
            continue
        names.append(name)
    return names


def report(args: argparse.Namespace, outcomes: dict[str, Outcome]) -> None:
    """Print the table: median msg/s, ratio to the best and to httpx, connections used, fake capacity."""
    for name, outcome in outcomes.items():
        if not outcome.rates:
            print(f"{CANDIDATES[name][0]}: FAILED {outcome.errors[:1]}")
    outcomes = {name: outcome for name, outcome in outcomes.items() if outcome.rates}
    medians = {name: statistics.median(o.rates) for name, o in outcomes.items()}
    best = max(medians.values())
    base = medians.get("httpx")
    print(f"\nN={args.n} pushes, concurrency {args.c} streams, one connection, median of {args.runs} runs")
    print(f"{'client':48} {'msg/s':>8} {'runs':>22} {'vs best':>8} {'vs httpx':>9} {'cpu us/msg':>10} conns")
    for name, outcome in outcomes.items():
        runs = "/".join(f"{rate:.0f}" for rate in outcome.rates)
        vs_httpx = f"{medians[name] / base:.2f}x" if base else "-"
        conns = ",".join(str(c) for c in outcome.connections)
        cpu_us = statistics.median(outcome.client_us)
        print(f"{CANDIDATES[name][0]:48} {medians[name]:8.0f} {runs:>22} {medians[name] / best:7.2f}x "
              f"{vs_httpx:>9} {cpu_us:10.0f} {conns}" + (f"  ERRORS {outcome.errors}" * bool(outcome.errors)))
    caps = [cap for o in outcomes.values() for cap in o.fake_caps]
    print("fake APNs capacity (requests per CPU-second of the fake process): "
          f"median {statistics.median(caps):.0f}, range {min(caps):.0f}-{max(caps):.0f}")


def main() -> None:
    """Parse arguments, run, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000, help="pushes per run")
    parser.add_argument("-c", type=int, default=200, help="concurrent streams")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", default=",".join(CANDIDATES))
    args = parser.parse_args()
    names = available(args.clients.split(","))
    report(args, run_all(args, names))


if __name__ == "__main__":
    main()
