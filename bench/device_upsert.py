"""Measure PUT /api/v1/devices/{token} under gunicorn (2 workers, SQLite) against GET /api/v1/health.

Run: .venv/bin/python bench/device_upsert.py [--duration 10] [--concurrency 16] [--max-requests 60000]
     [--new-share 0.3] [--workers 2] [--keep-alive [--threads 2]]
A fresh SQLite database and instance folder are made in a temp dir (`flask db upgrade`), an app and an API
key are created, gunicorn is started on 127.0.0.1, and an asyncio load generator in this process drives it:
first the no-database baseline (health), then the upserts: a share of new tokens, the rest re-registrations
of tokens already sent (each with its subscriber key from a pool of 5,000, 2% moving to another key).
Only 127.0.0.1 is used.

The load generator writes raw HTTP/1.1 on asyncio streams, one connection per request (gunicorn's sync
workers close every connection anyway): it costs a fraction of a general client's CPU, which matters on a
2-core machine where client and server share the cores. (aiohttp's pooled client, retrying on connections
the server has closed, measured 5-10x lower here.)

--keep-alive reuses connections instead (one per request in flight), as mobile HTTP stacks (OkHttp, URLSession)
and a proxy with upstream keep-alive do; gunicorn's sync workers cannot keep a connection open, so the server then
runs gthread workers (`-k gthread --threads N --keep-alive 5`). The default, a connection per request, is the
conservative figure: a device registers once per app start, usually on a connection of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PLATFORMS = ("android", "ios")
CUSTOMERS = 5000
MOVE_SHARE = 0.02  # re-registrations that come with another subscriber key
TIME_ZONES = ("Europe/Warsaw", "Europe/Berlin", "America/New_York", "UTC")


@dataclass
class Result:
    """Latencies and errors of one measured phase."""

    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    server_cpu: float = 0.0  # seconds of CPU used by gunicorn (master and workers) during the phase
    client_cpu: float = 0.0  # seconds of CPU used by this load generator during the phase

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    def line(self) -> str:
        """One summary line (CPU per request is the figure that least depends on other load on the machine)."""
        done = max(1, len(self.latencies))
        return (
            f"{self.name:<8} {len(self.latencies):>7} req in {self.seconds:5.1f} s = {self.rate:7.0f} req/s   "
            f"p50 {self.percentile(50):6.1f} ms   p99 {self.percentile(99):6.1f} ms   errors {self.errors}   "
            f"CPU/req: server {self.server_cpu / done * 1000:.2f} ms, load generator "
            f"{self.client_cpu / done * 1000:.2f} ms   statuses {dict(sorted(self.statuses.items()))}"
        )


def _free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prepare(tmp: Path) -> tuple[dict[str, str], str]:
    """Migrate a fresh database and create an app with a key; returns (environment, API key)."""
    env = {
        **os.environ,
        "WEBADMIN_DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
        "WEBADMIN_INSTANCE_PATH": str(tmp / "instance"),
        "WEBADMIN_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "wsgi:app", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    script = (
        "from webadmin import create_app\n"
        "from webadmin.extensions import db\n"
        "from webadmin.models.app import ApiKey, App, hash_api_key\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    push_app = App(name='Bench', platforms=['android', 'ios', 'web'])\n"
        "    db.session.add(push_app); db.session.flush()\n"
        "    prefix, secret = ApiKey.generate()\n"
        "    db.session.add(ApiKey(app_id=push_app.id, name='bench', prefix=prefix, key_hash=hash_api_key(secret)))\n"
        "    db.session.commit()\n"
        "    print(secret)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return env, out.stdout.strip().splitlines()[-1]


def _start_gunicorn(env: dict[str, str], port: int, workers: int, threads: int = 0) -> subprocess.Popen:
    """gunicorn with the default (sync) workers, as in production docs; gthread workers when `threads` is set
    (the worker class that keeps connections alive)."""
    cmd = [str(VENV_BIN / "gunicorn"), "-w", str(workers), "-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    if threads:
        cmd += ["-k", "gthread", "--threads", str(threads), "--keep-alive", "5"]
    return subprocess.Popen([*cmd, "wsgi:app"], cwd=ROOT, env=env)


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu(master: int) -> float:
    """CPU seconds of the gunicorn master and its workers."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        children = []
    return _process_cpu(master) + sum(_process_cpu(int(pid)) for pid in children)


class HttpClient:
    """Minimal HTTP/1.1 over asyncio streams: one request per connection, returns the status code."""

    def __init__(self, port: int, server_pid: int) -> None:
        self.port = port
        self.server_pid = server_pid

    async def send(self, method: str, path: str, body: bytes = b"", headers: str = "") -> int:
        """Send one request and read the whole response; the status code."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            response = await reader.read()  # the server closes after the response
        finally:
            writer.close()
        return int(response[9:12])


class KeepAliveClient(HttpClient):
    """HTTP/1.1 with persistent connections: an idle one is reused, a new one opened when none is free."""

    def __init__(self, port: int, server_pid: int) -> None:
        super().__init__(port, server_pid)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.retried = 0

    async def send(self, method: str, path: str, body: bytes = b"", headers: str = "") -> int:
        """Send one request on a kept-alive connection; like real clients, once more on a fresh connection when a
        reused one turns out closed by the server (its keep-alive timeout); the requests sent are idempotent."""
        if self.idle:
            try:
                return await self._send_on(self.idle.pop(), method, path, body, headers)
            except OSError:
                self.retried += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.opened += 1
        return await self._send_on((reader, writer), method, path, body, headers)

    async def _send_on(
        self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], method: str, path: str, body: bytes,
        headers: str,
    ) -> int:
        """One request and its response on this connection, which goes back to the idle ones unless closed."""
        reader, writer = connection
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
        try:
            writer.write(head.encode() + body)
            response_head = await reader.readuntil(b"\r\n\r\n")
            length, close = 0, False
            for line in response_head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            writer.close()
            raise OSError("connection lost") from exc
        if close:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return int(response_head[9:12])


async def _wait_ready(client: HttpClient, timeout: float = 30) -> None:
    """Poll the health endpoint until gunicorn answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await client.send("GET", "/api/v1/health") == 200:
                return
        except (OSError, ValueError):
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("gunicorn did not start")


class UpsertMix:
    """Request bodies: a share of new tokens, the rest re-registrations of tokens already sent."""

    def __init__(self, new_share: float, seed: int = 7) -> None:
        self.random = random.Random(seed)
        self.new_share = new_share
        self.known: list[tuple[str, str, str]] = []  # (token, platform, subscriber key)
        self.counter = 0

    def _customer(self) -> str:
        """A subscriber key from a pool (so some are new and most are known)."""
        return f"customer{self.random.randrange(CUSTOMERS)}@example.com"

    def next(self) -> tuple[str, dict]:
        """(token, body) for the next request."""
        if not self.known or self.random.random() < self.new_share:
            self.counter += 1
            token = f"bench{self.counter:08d}{self.random.getrandbits(64):016x}"
            device = (token, self.random.choice(PLATFORMS), self._customer())
            self.known.append(device)
        else:
            index = self.random.randrange(len(self.known))
            if self.random.random() < MOVE_SHARE:  # the app was signed in as someone else
                self.known[index] = (*self.known[index][:2], self._customer())
            device = self.known[index]
        token, platform, customer = device
        body = {
            "platform": platform,
            "subscriberKey": customer,
            "locale": "pl-PL",
            "timeZone": self.random.choice(TIME_ZONES),
            "appVersion": f"4.{self.random.randrange(3)}.0",
        }
        return token, body


async def _run_phase(
    name: str, send: Callable, server_pid: int, concurrency: int, duration: float, max_requests: int
) -> Result:
    """Keep `concurrency` requests in flight for `duration` seconds (or until `max_requests`)."""
    result = Result(name)
    budget = [max_requests]
    deadline = time.monotonic() + duration

    async def worker() -> None:
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            try:
                status = await send()
            except (OSError, ValueError):
                result.errors += 1
                continue
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status >= 300:
                result.errors += 1

    started, server_before, client_before = time.monotonic(), _server_cpu(server_pid), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.monotonic() - started
    result.server_cpu = _server_cpu(server_pid) - server_before
    result.client_cpu = time.process_time() - client_before
    return result


async def _measure(client: HttpClient, secret: str, args: argparse.Namespace) -> tuple[Result, Result, int]:
    """Baseline (health) then upserts, each after a short warm-up; also the number of distinct tokens sent."""
    await _wait_ready(client)
    auth = f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
    mix = UpsertMix(args.new_share)

    async def health() -> int:
        return await client.send("GET", "/api/v1/health")

    async def upsert() -> int:
        token, body = mix.next()
        return await client.send("PUT", f"/api/v1/devices/{token}", json.dumps(body).encode(), auth)

    await _run_phase("warm-up", health, client.server_pid, args.concurrency, 1.0, 2000)
    baseline = await _run_phase("health", health, client.server_pid, args.concurrency, args.duration, args.max_requests)
    await _run_phase("warm-up", upsert, client.server_pid, args.concurrency, 1.0, 2000)
    upserts = await _run_phase("upsert", upsert, client.server_pid, args.concurrency, args.duration, args.max_requests)
    return baseline, upserts, len(mix.known)


def _check_rows(database: Path, tokens_sent: int) -> str:
    """Every distinct token sent is exactly one device row."""
    with sqlite3.connect(database) as conn:
        devices = conn.execute("SELECT count(*), count(DISTINCT token) FROM devices").fetchone()
        subscribers = conn.execute("SELECT count(*) FROM subscribers").fetchone()[0]
    verdict = "ok" if devices[0] == devices[1] == tokens_sent else "MISMATCH"
    return f"rows: {devices[0]} devices for {tokens_sent} distinct tokens sent ({verdict}), {subscribers} subscribers"


def main() -> None:
    """Parse options, run the phases, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--max-requests", type=int, default=60_000, help="cap per phase")
    parser.add_argument("--new-share", type=float, default=0.3, help="share of requests with a new token")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--keep-alive", action="store_true", help="reuse connections (gthread workers)")
    parser.add_argument("--threads", type=int, default=2, help="threads per gthread worker with --keep-alive")
    args = parser.parse_args()
    threads = args.threads if args.keep_alive else 0
    client_class = KeepAliveClient if args.keep_alive else HttpClient

    load_before = os.getloadavg()[0]  # other work on the machine skews every figure below
    with tempfile.TemporaryDirectory(prefix="wa-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env, secret = _prepare(tmp)
        port = _free_port()
        server = _start_gunicorn(env, port, args.workers, threads)
        try:
            client = client_class(port, server.pid)
            baseline, upserts, tokens = asyncio.run(_measure(client, secret, args))
        finally:
            server.terminate()
            server.wait(timeout=30)
        kind = f"gthread, {threads} threads, keep-alive" if threads else "sync, a connection per request"
        print(
            f"gunicorn -w {args.workers} ({kind}), SQLite WAL, {args.concurrency} requests in flight, "
            f"{args.duration:.0f} s per phase, {os.cpu_count()} CPUs shared with the load generator, "
            f"load average before the run {load_before:.1f}"
        )
        print(baseline.line())
        print(upserts.line())
        print(
            f"upsert/health throughput ratio: {upserts.rate / baseline.rate:.2f}; "
            f"median latency ratio: {statistics.median(upserts.latencies) / statistics.median(baseline.latencies):.2f}"
        )
        if threads:
            print(f"connections opened: {client.opened}, requests retried on a closed kept-alive one: {client.retried}")
        print(_check_rows(tmp / "bench.sqlite3", tokens))


if __name__ == "__main__":
    main()
