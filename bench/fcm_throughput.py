"""webadmin's FCM path, end to end through the engine, against firebase-admin's send_each on a local fake FCM.

Run: .venv/bin/python bench/fcm_throughput.py [-n 5000] [--runs 3] [--latencies 0,20] [--concurrency 100]
     [--profile] [--engine-ab REV]

The fake, bench/fake_fcm/server.js (Node built-ins only; started and killed here, usage in its header), serves
FCM HTTP v1 and the OAuth2 token endpoint over TLS (HTTP/1.1 and h2, at most 100 streams per h2 connection) on
127.0.0.1 with a self-signed certificate made here at run time. It counts requests, distinct tokens, duplicate
deliveries, TCP connections and its own CPU. The bench first loads it with bare clients (its capacity: aiohttp
over HTTP/1.1, webadmin's H2Client over HTTP/2), then, per added latency, interleaves `--runs` runs of:
- firebase-admin `messaging.send_each` in chunks of 500 (FCM URL patched to the fake, REQUESTS_CA_BUNDLE set
  to the certificate, a fresh app per run so its token and connections start cold);
- webadmin `engine.dispatch` (claim → send → record) of a campaign to N android devices on a temp SQLite
  database, through an FCM channel whose options point at the fake (`concurrency` = `--concurrency` requests in
  flight, HTTP/2; a fresh worker runtime per run, so connections and the access token start cold);
- the same with 1% of the tokens answering 503 + Retry-After: 0 once (ENGINE_RETRY_BASE_SECONDS 0.01,
  dispatch called again until the campaign is sent).
CPU is this process's CPU time per delivered message (database work included). Figures are medians.

firebase-admin is a benchmark-only dependency (`.venv/bin/pip install firebase-admin`); without it the
baseline is skipped. `--profile` prints a pyinstrument profile of one webadmin run (needs pyinstrument).
`--engine-ab REV` adds, per latency, interleaved pairs of the engine loop at a git revision (its engine.py loaded
from git) against the working tree's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER_JS = Path(__file__).resolve().parent / "fake_fcm" / "server.js"
HOST = "127.0.0.1"
PROJECT = "bench-proj"
FAIL_PERCENT = 1
POOL_SIZE = 100  # the worker runtime's connection pool (WorkerRuntime pool_size): the bound on connections
STREAMS_PER_CONNECTION = 100  # the fake's SETTINGS_MAX_CONCURRENT_STREAMS
MAX_SECONDS = 300.0  # bound on one run


# ---- the fake -------------------------------------------------------------------------------------------


def make_tls(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (it is its own trust anchor): (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-fcm.localhost")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fake_fcm_cert.pem", directory / "fake_fcm_key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def make_service_account(token_uri: str) -> dict[str, str]:
    """A throwaway service-account dict (RSA key made now) whose token_uri is the fake's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {
        "type": "service_account", "project_id": PROJECT, "private_key_id": "bench-key-1", "private_key": pem,
        "client_email": f"bench@{PROJECT}.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri,
    }


@dataclass
class Fake:
    """The running fake FCM: its URL, the certificate to trust, and control calls."""

    url: str
    ca_file: str
    process: subprocess.Popen[bytes]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One control request (a new connection each time)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        context = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return json.loads(resp.read())

    def reset(self, latency_ms: float, fail_percent: float = 0) -> None:
        """Zero the counters and set the behaviour of the next run."""
        self.call("POST", "/reset", {"latencyMs": latency_ms, "failPercent": fail_percent})

    def stats(self) -> dict[str, Any]:
        """The counters since the last reset, not counting this call's own connection."""
        stats = self.call("GET", "/stats")
        stats["connections"] -= 1
        return stats


@contextlib.contextmanager
def fake_fcm(directory: Path) -> Iterator[Fake]:
    """Start the Node fake on an ephemeral 127.0.0.1 port; always kill it afterwards."""
    cert, key = make_tls(directory)
    process = subprocess.Popen(["node", str(SERVER_JS), "--cert", cert, "--key", key],
                               stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the fake FCM server did not start (is node installed?)")
        yield Fake(f"https://{HOST}:{json.loads(line)['port']}", cert, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fcm_tokens(n: int) -> list[str]:
    """N distinct registration tokens shaped like real ones (about 160 characters)."""
    return [f"bench{i:07d}:APA91b{secrets.token_urlsafe(108)}" for i in range(n)]


# ---- the fake's own capacity --------------------------------------------------------------------------


async def _load(fake: Fake, tokens: list[str], concurrency: int) -> int:
    """Send one request per token with a bare aiohttp client; returns the 200 answers."""
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=ssl.create_default_context(cafile=fake.ca_file))
    url = f"{fake.url}/v1/projects/{PROJECT}/messages:send"
    headers = {"Authorization": "Bearer fake-access-token-0", "Content-Type": "application/json"}
    slots = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, token: str) -> bool:
        body = json.dumps({"message": {"token": token, "notification": {"title": "t", "body": "b"}}})
        async with slots, session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            return resp.status == 200

    async with aiohttp.ClientSession(connector=connector) as session:
        return sum(await asyncio.gather(*(one(session, token) for token in tokens)))


async def _load_h2(fake: Fake, tokens: list[str], concurrency: int) -> int:
    """Send one request per token with webadmin's bare H2Client pool (no FcmBackend); returns the 200 answers."""
    from webadmin.providers._h2 import H2Pool

    ctx = ssl.create_default_context(cafile=fake.ca_file)
    ctx.set_alpn_protocols(["h2"])
    pool = H2Pool(fake.url, ctx, size=concurrency, timeout=30.0, peer="fake FCM")
    path = f"/v1/projects/{PROJECT}/messages:send"
    headers = [(":method", "POST"), (":scheme", "https"), (":authority", pool.authority), (":path", path),
               ("authorization", "Bearer fake-access-token-0"), ("content-type", "application/json")]
    queue = iter(tokens)

    async def worker() -> int:
        ok = 0
        for token in queue:
            body = json.dumps({"message": {"token": token, "notification": {"title": "t", "body": "b"}}}).encode()
            ok += (await pool.request(headers, body, 30.0)).status == 200
        return ok

    try:
        return sum(await asyncio.gather(*(worker() for _ in range(concurrency))))
    finally:
        await pool.aclose()


def h2_capacity(fake: Fake, n: int, concurrency: int = 100) -> str:
    """How fast the fake answers webadmin's bare HTTP/2 client (one connection), and its CPU per request."""
    tokens = fcm_tokens(n)
    run = measure(fake, 0, 0, lambda: (asyncio.run(_load_h2(fake, tokens, concurrency)), {}))
    fake_us = run.fake["cpuSeconds"] / max(1, run.fake["sendRequests"]) * 1e6
    return (f"fake FCM over HTTP/2: {run.rate:,.0f} req/s to a bare H2Client ({concurrency} streams, "
            f"{run.fake['sendConnections']} connection(s), client CPU {run.cpu_us:,.0f} µs/req); fake CPU "
            f"{fake_us:,.0f} µs/req → {1e6 / fake_us:,.0f} req per fake CPU-second; fake busy {busy(run):.0%}")


def fake_capacity(fake: Fake, n: int, concurrency: int = 200) -> str:
    """How fast the fake answers a bare aiohttp client, and its CPU per request (→ requests per CPU-second)."""
    tokens = fcm_tokens(n)
    run = measure(fake, 0, 0, lambda: (asyncio.run(_load(fake, tokens, concurrency)), {}))
    fake_us = run.fake["cpuSeconds"] / max(1, run.fake["sendRequests"]) * 1e6
    return (f"fake FCM capacity: {run.rate:,.0f} req/s answered to a bare aiohttp client ({concurrency} connections, "
            f"{run.delivered:,} requests, client CPU {run.cpu_us:,.0f} µs/req); fake CPU {fake_us:,.0f} µs/req "
            f"→ {1e6 / fake_us:,.0f} req per fake CPU-second; fake busy {busy(run):.0%} of the wall time")


# ---- one measured run ---------------------------------------------------------------------------------


def busy(run: Run) -> float:
    """Share of the run's wall time the fake spent on the CPU (near 100% would make it the bottleneck)."""
    return run.fake["cpuSeconds"] / run.seconds


@dataclass
class Run:
    """What one run of one client did."""

    delivered: int
    seconds: float
    cpu_seconds: float
    fake: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Delivered messages per wall second."""
        return self.delivered / self.seconds

    @property
    def cpu_us(self) -> float:
        """Client CPU per delivered message, µs."""
        return self.cpu_seconds / max(1, self.delivered) * 1e6


def measure(fake: Fake, latency_ms: float, fail_percent: float, work: Callable[[], tuple[int, dict[str, Any]]]
            ) -> Run:
    """Reset the fake, time `work` (wall and this process's CPU), read the fake's counters."""
    fake.reset(latency_ms, fail_percent)
    wall, cpu = time.perf_counter(), time.process_time()
    delivered, extra = work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Run(delivered, wall, cpu, fake.stats(), extra)


# ---- firebase-admin -----------------------------------------------------------------------------------


class FirebaseBaseline:
    """firebase-admin's messaging.send_each pointed at the fake (URL patched, its certificate trusted)."""

    def __init__(self, fake: Fake, service_account: dict[str, str], tokens: list[str]) -> None:
        import firebase_admin
        from firebase_admin import credentials, messaging

        self.fake, self.messaging, self.firebase_admin = fake, messaging, firebase_admin
        self.certificate = lambda: credentials.Certificate(service_account)
        self.app = firebase_admin.initialize_app(self.certificate(), name="bench")
        self.version = firebase_admin.__version__
        with warnings.catch_warnings():  # 7.x deprecates `token` for `fid`; these are registration tokens
            warnings.simplefilter("ignore", DeprecationWarning)
            self.messages = [self._message(token) for token in tokens]

    def _message(self, token: str) -> Any:
        """The same content webadmin sends: notification, android priority/ttl/tag, data."""
        m = self.messaging
        return m.Message(
            token=token,
            notification=m.Notification(title="Your order has shipped", body="Track it in the app."),
            android=m.AndroidConfig(priority="high", ttl=3600,
                                    notification=m.AndroidNotification(tag=secrets.token_hex(16))),
            data={"order": "42", "openDirect": "nibs://orders/42"},
        )

    def _service(self) -> Any:
        """A fresh messaging service (own sessions, cold token) aimed at the fake."""
        import requests.adapters
        from firebase_admin import _http_client

        self.firebase_admin.delete_app(self.app)
        self.app = self.firebase_admin.initialize_app(self.certificate(), name="bench")  # cold token
        service = self.messaging._get_messaging_service(self.app)
        # google-auth would look up a "regional access boundary" at iamcredentials.googleapis.com after the
        # token refresh; the bench stays on 127.0.0.1 (webadmin's FCM path never makes that call).
        service._credential._is_regional_access_boundary_lookup_required = lambda: False
        service._fcm_url = f"{self.fake.url}/v1/projects/{PROJECT}/messages:send"
        # firebase-admin mounts a 100-connection pool for fcm.googleapis.com only; give the fake the same pool.
        adapter = requests.adapters.HTTPAdapter(pool_connections=100, pool_maxsize=100,
                                                max_retries=_http_client.DEFAULT_RETRY_CONFIG)
        service._client.session.mount(self.fake.url, adapter)
        return service

    def send(self) -> tuple[int, dict[str, Any]]:
        """send_each in chunks of 500 (its limit); returns the successes."""
        self._service()
        ok = 0
        for start in range(0, len(self.messages), 500):
            ok += self.messaging.send_each(self.messages[start:start + 500], app=self.app).success_count
        return ok, {}

    def close(self) -> None:
        """Delete the firebase app."""
        self.firebase_admin.delete_app(self.app)


@contextlib.contextmanager
def trusted_by_requests(ca_file: str) -> Iterator[None]:
    """requests (firebase-admin's transport, token refresh included) trusts the fake's certificate."""
    old = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = ca_file
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = old


# ---- webadmin end to end ------------------------------------------------------------------------------


class Console:
    """A throwaway webadmin (temp SQLite) with one app, N android devices and an FCM channel to the fake."""

    def __init__(self, directory: Path, fake: Fake, service_account: dict[str, str], tokens: list[str],
                 concurrency: int = 100) -> None:
        self.concurrency = concurrency
        os.environ["WEBADMIN_INSTANCE_PATH"] = str(directory / "instance")
        from webadmin import create_app

        self.flask = create_app({
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{directory / 'bench.sqlite3'}",
            "INSTANCE_PATH": str(directory),
            "SECRET_KEY": "bench",
            "CREDENTIALS_KEYS": Fernet.generate_key().decode(),
            "QUEUE_IMMEDIATE": True,
            "LOG_LEVEL": "WARNING",
            "ENGINE_RETRY_BASE_SECONDS": 0.01,
        })
        self._context = self.flask.app_context()
        self._context.push()
        import webadmin.tasks

        webadmin.tasks.enqueue_dispatch = lambda campaign_id, pending: 0  # start() only materialises
        self.app_id = self._populate(fake, service_account, tokens)

    def _populate(self, fake: Fake, service_account: dict[str, str], tokens: list[str]) -> int:
        """Tables, the app, its devices (one set-based insert) and the FCM channel."""
        from sqlalchemy import insert

        from webadmin.crypto import encrypt_credentials
        from webadmin.extensions import db
        from webadmin.models.app import App
        from webadmin.models.audience import Device
        from webadmin.models.campaign import Channel

        db.create_all()
        app = App(name="Bench", deep_link_scheme="nibs", platforms=["android"])
        db.session.add(app)
        db.session.flush()
        db.session.execute(insert(Device), [{"app_id": app.id, "platform": "android", "token": token}
                                            for token in tokens])
        options = {"endpoint": fake.url, "auth_endpoint": f"{fake.url}/token", "ca_file": fake.ca_file,
                   "concurrency": self.concurrency}
        db.session.add(Channel(app_id=app.id, platform="android", backend="fcm", name="FCM (fake)",
                               credentials_encrypted=encrypt_credentials(service_account), options=options))
        db.session.commit()
        return app.id

    def start_campaign(self) -> int:
        """A campaign to every device, started (messages materialised, nothing dispatched)."""
        from webadmin.services.campaigns import CampaignDraft, create_campaign, start

        draft = CampaignDraft(app_id=self.app_id, title="Your order has shipped", text="Track it in the app.",
                              open_direct="nibs://orders/42", data={"order": "42"}, ttl=3600)
        campaign = create_campaign(draft, actor="bench")
        start(campaign, actor="bench")
        return campaign.id

    def dispatch_until_sent(self, campaign_id: int) -> tuple[int, dict[str, Any]]:
        """engine.dispatch until the campaign is sent (retries wait for next_attempt_at); returns delivered."""
        from webadmin.sending.engine import dispatch

        calls, started = 0, time.monotonic()
        while self._status(campaign_id) == "sending":
            if time.monotonic() - started > MAX_SECONDS:
                raise RuntimeError(f"campaign {campaign_id} not sent after {MAX_SECONDS:.0f} s")
            if calls:
                time.sleep(0.005)  # a retry is due in ~10 ms
            dispatch(campaign_id)
            calls += 1
        return self._sent(campaign_id), {"dispatch_calls": calls}

    @staticmethod
    def _status(campaign_id: int) -> str:
        from webadmin.extensions import db
        from webadmin.models.campaign import Campaign

        db.session.commit()
        return str(db.session.get(Campaign, campaign_id, populate_existing=True).status)

    @staticmethod
    def _sent(campaign_id: int) -> int:
        from sqlalchemy import func, select

        from webadmin.extensions import db
        from webadmin.models.message import Message

        query = select(func.count()).where(Message.campaign_id == campaign_id, Message.state == "SENT")
        return int(db.session.scalar(query) or 0)

    def run(self, fake: Fake, latency_ms: float, fail_percent: float) -> Run:
        """One cold run: a new campaign, a new worker runtime (no kept connections, no cached token)."""
        from webadmin.sending.runtime import worker_runtime

        campaign_id = self.start_campaign()
        with worker_runtime() as runtime:
            runtime.close()  # the next dispatch builds a fresh runtime: connections and token start cold
        run = measure(fake, latency_ms, fail_percent, lambda: self.dispatch_until_sent(campaign_id))
        with worker_runtime() as runtime:
            run.extra["runtime_connections"] = runtime.connections_opened
        return run

    def close(self) -> None:
        """Close the worker runtime and leave the app context."""
        from webadmin.extensions import db
        from webadmin.sending.runtime import worker_runtime

        with worker_runtime() as runtime:
            runtime.close()
        db.session.remove()
        db.engine.dispose()
        self._context.pop()


# ---- the benchmark ------------------------------------------------------------------------------------


def median(runs: list[Run], value: Callable[[Run], float]) -> float:
    """Median of a figure over runs."""
    return statistics.median(value(r) for r in runs)


def describe(label: str, runs: list[Run]) -> str:
    """One line of medians (and the individual rates) for a series of runs."""

    def fake(name: str) -> float:
        return statistics.median(r.fake[name] for r in runs)

    rates = "/".join(f"{r.rate:,.0f}" for r in runs)
    token_conns = statistics.median(r.fake["connections"] - r.fake["sendConnections"] for r in runs)
    return (f"  {label:<34} {median(runs, lambda r: r.rate):>7,.0f} msg/s (runs {rates})  "
            f"CPU {median(runs, lambda r: r.cpu_us):>5,.0f} µs/msg  conns {fake('sendConnections'):,.0f} "
            f"(+{token_conns:,.0f} token)  token calls {fake('tokenCalls'):,.0f}  delivered {fake('delivered'):,.0f}  "
            f"dups {max(r.fake['duplicates'] for r in runs)}  503s {fake('unavailable'):,.0f}  "
            f"max in flight {max(r.fake.get('maxInFlight', 0) for r in runs)}  fake busy {median(runs, busy):.0%}")


def verdicts(clean: list[Run], flaky: list[Run], baseline: list[Run], n: int) -> list[str]:
    """The targets of issue 5, met or not."""
    rate = median(clean, lambda r: r.rate)
    cpu = median(clean, lambda r: r.cpu_us)
    lines = []
    if baseline:
        ratio = rate / median(baseline, lambda r: r.rate)
        per_cpu = median(baseline, lambda r: r.cpu_us) / cpu
        lines.append(f"ratio webadmin / firebase-admin: {ratio:.1f}× msg/s (target ≥ 5×) "
                     f"{'met' if ratio >= 5 else 'MISSED'}; {per_cpu:.1f}× msg per client CPU-second")
    lines.append(f"client CPU per message: {cpu:,.0f} µs (target ≤ 400) {'met' if cpu <= 400 else 'MISSED'}")
    conns = max(r.fake["sendConnections"] for r in clean + flaky)
    lines.append(f"send connections per campaign: max {conns} (target ≤ pool size {POOL_SIZE}; HTTP/2 needs "
                 f"⌈in flight / {STREAMS_PER_CONNECTION} streams⌉) {'met' if conns <= POOL_SIZE else 'MISSED'}")
    tokens = max(r.fake["tokenCalls"] for r in clean + flaky)
    lines.append(f"token endpoint calls per campaign: max {tokens} (target 1) {'met' if tokens == 1 else 'MISSED'}")
    share = median(flaky, lambda r: r.rate) / max(rate, 1e-9)
    dups = max(r.fake["duplicates"] for r in flaky)
    complete = all(r.delivered == n and r.fake["distinctTokens"] == n for r in clean + flaky)
    lines.append(f"1% 503-once: {share:.2f}× the clean run (target ≥ 0.9) {'met' if share >= 0.9 else 'MISSED'}; "
                 f"duplicates {dups} {'met' if dups == 0 else 'MISSED'}; every token delivered: {complete}")
    return lines


def bench_latency(fake: Fake, console: Console, firebase: FirebaseBaseline | None, latency: float,
                  runs: int, n: int) -> list[str]:
    """Interleaved runs at one added latency; returns the printed lines."""
    baseline: list[Run] = []
    clean: list[Run] = []
    flaky: list[Run] = []
    for _ in range(runs):
        if firebase is not None:
            with trusted_by_requests(fake.ca_file):
                baseline.append(measure(fake, latency, 0, firebase.send))
        clean.append(console.run(fake, latency, 0))
        flaky.append(console.run(fake, latency, FAIL_PERCENT))
    lines = [f"added latency {latency:g} ms, N = {n:,}, medians of {runs}:"]
    if baseline:
        lines.append(describe(f"firebase-admin {firebase.version} send_each", baseline))
    lines.append(describe(f"webadmin engine.dispatch ({console.concurrency} in flight)", clean))
    lines.append(describe(f"webadmin, {FAIL_PERCENT}% tokens 503 once", flaky))
    calls = statistics.median(r.extra["dispatch_calls"] for r in flaky)
    lines.append(f"  (503 run: median {calls:g} dispatch calls; runtime's own connection count "
                 f"{max(r.extra['runtime_connections'] for r in clean + flaky)})")
    lines += ["  " + line for line in verdicts(clean, flaky, baseline, n)]
    return lines


# ---- the engine loop against an earlier revision of it ----------------------------------------------------


def engine_at(revision: str) -> Any:
    """webadmin/sending/engine.py as it was at a git revision, loaded as its own module (the rest of the package
    is the working tree's): an A/B of the engine loop in one process."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:webadmin/sending/engine.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"webadmin.sending.engine_{revision.replace('~', '_').replace('^', '_')}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"engine.py@{revision}", "exec"), module.__dict__)
    return module


def bench_engine_ab(fake: Fake, console: Console, latency: float, runs: int, revision: str) -> list[str]:
    """Interleaved pairs (order alternating): engine.dispatch at `revision` against the working tree's."""
    from webadmin.sending import engine

    current, old, pairs = engine.dispatch, engine_at(revision).dispatch, []
    try:
        for i in range(runs):
            order = (old, current) if i % 2 == 0 else (current, old)
            measured = {}
            for dispatch in order:
                engine.dispatch = dispatch  # type: ignore[assignment]
                measured[dispatch] = console.run(fake, latency, 0)
            pairs.append((measured[old], measured[current]))
    finally:
        engine.dispatch = current  # type: ignore[assignment]
    ratio = statistics.median(b.rate / a.rate for a, b in pairs)
    olds, news = [a for a, _ in pairs], [b for _, b in pairs]
    return [f"engine loop at {latency:g} ms, {runs} interleaved pairs: engine.dispatch@{revision} "
            f"{median(olds, lambda r: r.rate):,.0f} msg/s ({'/'.join(f'{r.rate:,.0f}' for r in olds)}), working tree "
            f"{median(news, lambda r: r.rate):,.0f} msg/s ({'/'.join(f'{r.rate:,.0f}' for r in news)}), pairwise "
            f"median {ratio:.2f}×; CPU {median(olds, lambda r: r.cpu_us):,.0f} → "
            f"{median(news, lambda r: r.cpu_us):,.0f} µs/msg; send connections "
            f"{max(r.fake['sendConnections'] for r in news)}; dups {max(r.fake['duplicates'] for r in news)}; "
            f"fake max in flight {max(r.fake.get('maxInFlight', 0) for r in news)}"]


def profile(fake: Fake, console: Console) -> None:
    """Print where one clean webadmin run spends its time."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    with profiler:
        console.run(fake, 0, 0)
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def load_firebase(fake: Fake, service_account: dict[str, str], tokens: list[str]) -> FirebaseBaseline | None:
    """The baseline, or None (with a note) when firebase-admin is not installed."""
    try:
        return FirebaseBaseline(fake, service_account, tokens)
    except ImportError:
        print("firebase-admin is not installed: baseline skipped (.venv/bin/pip install firebase-admin)")
        return None


def main(argv: list[str] | None = None) -> None:
    """Measure and print every figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="messages per run (bounded to 50,000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latencies", default="0,20", help="added latencies of the fake, ms")
    parser.add_argument("--concurrency", type=int, default=100, help="webadmin's FCM requests in flight")
    parser.add_argument("--profile", action="store_true", help="pyinstrument profile of one webadmin run")
    parser.add_argument("--engine-ab", metavar="REV",
                        help="also interleave engine.dispatch at git revision REV with the working tree's")
    args = parser.parse_args(argv)
    n = max(1, min(args.n, 50_000))
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # firebase-admin's "pool is full" noise
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start", flush=True)
    with tempfile.TemporaryDirectory(prefix="fcm-bench-") as tmp, fake_fcm(Path(tmp)) as fake:
        print(fake_capacity(fake, 20_000), flush=True)
        print(h2_capacity(fake, 20_000), flush=True)
        tokens = fcm_tokens(n)
        service_account = make_service_account(f"{fake.url}/token")
        firebase = load_firebase(fake, service_account, tokens)
        console = Console(Path(tmp), fake, service_account, tokens, args.concurrency)
        try:
            if args.profile:
                profile(fake, console)
            for latency in (float(v) for v in args.latencies.split(",")):
                print("\n".join(bench_latency(fake, console, firebase, latency, args.runs, n)), flush=True)
                if args.engine_ab:
                    print("\n".join(bench_engine_ab(fake, console, latency, args.runs, args.engine_ab)), flush=True)
        finally:
            console.close()
            if firebase is not None:
                firebase.close()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
