"""Real consumer processes for the reliability tests and bench/engine_reliability.py: `flask --app webadmin worker`
subprocesses on a shared database and queue, the Debug backend's delivery journal, SIGKILL rounds, scratch
PostgreSQL databases and Redis queues.

The Debug backend's `delay_ms` makes a campaign last long enough to kill a worker mid-way; its `journal` gets a
line "<message uuid> <pid>" per delivery, so a re-send after a crash shows as a duplicate line.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from flask import Flask
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from tests.factories import make_app
from webadmin import create_app
from webadmin.config import normalize_database_url
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign, Channel
from webadmin.models.message import Message
from webadmin.sending.sweeper import sweep_once
from webadmin.services import campaigns
from webadmin.services.campaigns import CampaignDraft

ROOT = Path(__file__).resolve().parents[2]
BATCH = 50  # messages per claim (WEBADMIN_ENGINE_BATCH_SIZE of the consumers)
THREADS = 2  # worker threads per consumer process
# Batches a worker thread can have delivered but not recorded when it dies: the one it is recording and the next,
# already on the wire (engine.Dispatch starts batch k+1 once k's answers are in, then records k).
UNRECORDED_PER_THREAD = 2
DELAY_MS = 250  # per batch in the SIGKILL test: long enough to land a kill mid-batch


def consumer_env(instance: Path, database_url: str, queue_url: str | None = None,
                 **engine: float) -> dict[str, str]:
    """WEBADMIN_* settings shared by the test process and its consumers (engine tunables included: batch_size
    defaults to BATCH)."""
    env = {
        "WEBADMIN_INSTANCE_PATH": str(instance),
        "WEBADMIN_DATABASE_URL": database_url,
        "WEBADMIN_LOG_LEVEL": "INFO",
    }
    engine.setdefault("batch_size", BATCH)
    env.update({f"WEBADMIN_ENGINE_{name.upper()}": str(value) for name, value in engine.items()})
    if queue_url:
        env["WEBADMIN_REDIS_URL"] = queue_url
    return env


def queue_app(monkeypatch: pytest.MonkeyPatch | None, env: dict[str, str]) -> Flask:
    """This process's app on the consumers' settings, with the real queue (not immediate mode). The environment
    is changed through `monkeypatch` in tests (undone afterwards), directly in benchmarks."""
    patch = monkeypatch or pytest.MonkeyPatch()
    for name in [n for n in os.environ if n.startswith("WEBADMIN_") and not n.startswith("WEBADMIN_TEST_")]:
        patch.delenv(name)
    for name, value in env.items():
        patch.setenv(name, value)
    return create_app({"TESTING": True})


class Consumers:
    """`flask --app webadmin worker` subprocesses; on exit every one still running is killed and reaped."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("WEBADMIN_")}
        self.env = {**inherited, **env, "PYTHONUNBUFFERED": "1"}
        self.logs = logs
        self.procs: dict[subprocess.Popen[bytes], Path] = {}

    def start(self, threads: int = THREADS) -> subprocess.Popen[bytes]:
        """Launch one consumer with its output in a log file."""
        log_path = self.logs / f"consumer-{len(self.procs) + 1}.log"
        with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "webadmin", "worker", "--workers", str(threads)],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self.procs[proc] = log_path
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL: no clean-up, no goodbye — as when the machine dies."""
        proc.kill()
        proc.wait(timeout=10)

    def started(self) -> bool:
        """Whether every consumer has printed its start line."""
        return all(b"webadmin worker:" in log.read_bytes() for log in self.procs.values())

    def check_alive(self) -> None:
        """Fail at once, with its log, if a consumer that was not killed by the test has exited."""
        for proc, log in self.procs.items():
            if proc.returncode is None and proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                pytest.fail(f"consumer {proc.pid} exited with {proc.returncode}:\n{tail}")

    def __enter__(self) -> Consumers:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait(timeout=10)


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             check: Callable[[], None] | None = None) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def journal_lines(path: Path) -> int:
    """Deliveries so far (complete lines only: a writer may be mid-way)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def journal_entries(path: Path) -> list[tuple[str, int]]:
    """(message uuid, consumer pid) per delivery, in delivery order."""
    if not path.exists():
        return []
    return [(u, int(pid)) for u, pid in (line.split() for line in path.read_text().splitlines())]


def make_campaign(devices: int, **debug_credentials: object) -> int:
    """An app with `devices` android devices, a Debug channel with these credentials, and a draft campaign."""
    app_row = make_app("Reliability")
    db.session.execute(insert(Device), [{"app_id": app_row.id, "platform": "android", "token": f"rel-{i}"}
                                        for i in range(devices)])
    db.session.add(Channel(app_id=app_row.id, platform="android", backend="debug", name="Debug android",
                           credentials_encrypted=encrypt_credentials(debug_credentials)))
    campaign = campaigns.create_campaign(CampaignDraft(app_id=app_row.id, text="Reliability"), actor="test")
    db.session.commit()
    return campaign.id


def campaign_sent(campaign_id: int, sweep_every: float | None = None) -> Callable[[], bool]:
    """A wait condition: the campaign is sent. With `sweep_every`, run the sweeper that often meanwhile."""
    last_sweep = time.monotonic()

    def sent() -> bool:
        nonlocal last_sweep
        db.session.commit()  # end the previous snapshot
        if sweep_every is not None and time.monotonic() - last_sweep >= sweep_every:
            sweep_once()
            db.session.commit()
            last_sweep = time.monotonic()
        return db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id)) == "sent"

    return sent


def assert_one_debug_message_per_device(campaign_id: int, devices: int) -> dict[str, int]:
    """One DEBUG message per device, none pending or leased, counters consistent; returns uuid → attempts."""
    db.session.commit()
    m = Message
    rows = db.session.execute(
        select(m.uuid, m.device_id, m.state, m.number_of_send_attempts, m.lease_until).where(
            m.campaign_id == campaign_id)
    ).all()
    assert len(rows) == devices and len({r.device_id for r in rows}) == devices
    assert Counter(r.state for r in rows) == {"DEBUG": devices}
    assert [r.uuid for r in rows if r.lease_until is not None] == []
    campaign = db.session.get(Campaign, campaign_id)
    assert campaign is not None and campaign.status == "sent"
    counters = (campaign.targeted, campaign.sent, campaign.failed, campaign.retrying, campaign.cancelled)
    assert counters == (devices, devices, 0, 0, 0)
    return {r.uuid: r.number_of_send_attempts for r in rows}


def kill_mid_campaign(pool: Consumers, journal: Path, rng: random.Random, delay_ms: float = DELAY_MS
                      ) -> tuple[subprocess.Popen[bytes], float]:
    """Start a consumer, let it deliver (sweeping meanwhile), and SIGKILL it at a random moment.

    Returns the consumer and how long it took to boot and deliver its first batch.
    """
    before, began = journal_lines(journal), time.monotonic()
    proc = pool.start()
    # The sweeper (what the per-minute task does) re-enqueues the campaign once the killed consumer's leases have
    # expired: its Huey tasks died with it.
    wait_for(lambda: journal_lines(journal) > before, 30, "a restarted consumer to deliver",
             every(0.5, sweep_once, pool.check_alive))
    booted = time.monotonic() - began
    # Anywhere in the next ~8 batches: between batches, before the provider accepted one, or after it did and
    # before the result was recorded (the only case that re-sends).
    time.sleep(rng.uniform(0.0, 8 * delay_ms / 1000))
    pool.kill(proc)
    return proc, booted


def every(seconds: float, work: Callable[[], object], check: Callable[[], None]) -> Callable[[], None]:
    """A wait_for check that also runs `work` (and commits) at most every `seconds`."""
    last = time.monotonic()

    def run() -> None:
        nonlocal last
        check()
        if time.monotonic() - last >= seconds:
            work()
            db.session.commit()
            last = time.monotonic()

    return run


def in_flight_duplicates(entries: list[tuple[str, int]], attempts: dict[str, int], killed: set[int],
                         in_flight: int = UNRECORDED_PER_THREAD * BATCH * THREADS) -> list[str]:
    """Messages delivered more than once; every extra delivery was in flight in a consumer at its kill (at most
    `in_flight` per consumer)."""
    deliveries = Counter(u for u, _ in entries)
    assert set(deliveries) == set(attempts), "lost messages, or deliveries of unknown ones"
    assert all(n <= attempts[u] for u, n in deliveries.items()), "a delivery without a claim"
    pids: dict[str, list[int]] = defaultdict(list)
    for u, pid in entries:
        pids[u].append(pid)
    duplicates = sorted(u for u, n in deliveries.items() if n > 1)
    # The last delivery is the recorded one; each earlier one was made by a consumer the test killed, and a
    # consumer can have at most UNRECORDED_PER_THREAD batches per thread delivered but not recorded when it dies.
    unrecorded = Counter(pid for u in duplicates for pid in pids[u][:-1])
    assert set(unrecorded) <= killed
    assert all(n <= in_flight for n in unrecorded.values()), unrecorded
    assert len(duplicates) == sum(1 for u in duplicates if attempts[u] > 1)
    return duplicates


@contextmanager
def scratch_postgres(base_url: str, name: str | None = None) -> Iterator[str]:
    """A database of our own on the test server, dropped afterwards (the `test` database is not touched)."""
    url = make_url(normalize_database_url(base_url))
    name = name or f"webadmin_reliability_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def scratch_redis(base_url: str) -> Iterator[str]:
    """The test Redis database (15 unless the URL names one), flushed before and after; no other database."""
    parts = urlsplit(base_url)
    url = f"{parts.scheme}://{parts.netloc}/{parts.path.strip('/') or 15}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        yield url
    finally:
        client.flushdb()
        client.close()
