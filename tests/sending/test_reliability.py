"""Reliability with real consumer processes: SIGKILL mid-campaign (SQLite + SQLite queue), four consumers on one
campaign (PostgreSQL + Redis), and two concurrent starts of one campaign.

The Debug backend's `delay_ms` makes a campaign last long enough to kill a worker mid-way; its `journal` gets a
line "<message uuid> <pid>" per delivery, so a re-send after a crash shows as a duplicate line.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
import uuid
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

from tests.environment import need, postgres_url, redis_url
from tests.factories import make_app
from webadmin import create_app
from webadmin.config import normalize_database_url
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign, Channel
from webadmin.models.message import Message
from webadmin.providers.base import PushMessage
from webadmin.providers.debug import DebugBackend
from webadmin.sending.sweeper import sweep_once
from webadmin.services import ServiceError, campaigns
from webadmin.services.campaigns import CampaignDraft

ROOT = Path(__file__).resolve().parents[2]
BATCH = 50  # messages per claim (WEBADMIN_ENGINE_BATCH_SIZE of the consumers)
THREADS = 2  # worker threads per consumer process
KILLS = 4
DELAY_MS = 250  # per batch in the SIGKILL test: long enough to land a kill mid-batch


@pytest.fixture(autouse=True)
def _engine_config() -> None:
    """Replaces the package's autouse fixture: the consumer tests build their own apps, on purpose."""


# ----------------------------------------------------------------------------------------------- helpers


def consumer_env(instance: Path, database_url: str, queue_url: str | None = None,
                 **engine: float) -> dict[str, str]:
    """WEBADMIN_* settings shared by the test process and its consumers (engine tunables included)."""
    env = {
        "WEBADMIN_INSTANCE_PATH": str(instance),
        "WEBADMIN_DATABASE_URL": database_url,
        "WEBADMIN_ENGINE_BATCH_SIZE": str(BATCH),
        "WEBADMIN_LOG_LEVEL": "INFO",
    }
    env.update({f"WEBADMIN_ENGINE_{name.upper()}": str(value) for name, value in engine.items()})
    if queue_url:
        env["WEBADMIN_REDIS_URL"] = queue_url
    return env


def queue_app(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Flask:
    """The test process's app on the consumers' settings, with the real queue (not immediate mode)."""
    for name in [n for n in os.environ if n.startswith("WEBADMIN_") and not n.startswith("WEBADMIN_TEST_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
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


def report(request: pytest.FixtureRequest, record_property: Callable[[str, object], None], title: str,
           lines: list[str], **properties: object) -> None:
    """Print the figures (`-s`), attach them to the report (`-rA`, JUnit XML properties)."""
    for name, value in properties.items():
        record_property(name, value)
    body = "\n".join(lines)
    print(f"\n{title}\n{body}")
    request.node.add_report_section("call", title, body)


# ------------------------------------------------------------------------------------- the Debug backend


def test_debug_backend_journals_each_delivery_with_its_pid(tmp_path) -> None:
    journal = tmp_path / "journal.txt"
    messages = [PushMessage(message_id=i, uuid=str(uuid.uuid4()), token=f"t{i}", platform="web", body="b")
                for i in range(3)]
    backend = DebugBackend({"delay_ms": 20, "journal": str(journal)})
    began = time.monotonic()
    results = asyncio.run(backend.send_batch(messages))
    assert time.monotonic() - began >= 0.02
    assert all(r.ok for r in results) and [r.message_id for r in results] == [0, 1, 2]
    assert journal_entries(journal) == [(m.uuid, os.getpid()) for m in messages]
    asyncio.run(backend.send_batch(messages[:1]))  # appended, never overwritten
    assert journal_lines(journal) == 4


# ------------------------------------------------------------------------------------- SIGKILL, repeatedly


def kill_mid_campaign(pool: Consumers, journal: Path, rng: random.Random) -> tuple[subprocess.Popen[bytes], float]:
    """Start a consumer, let it deliver, SIGKILL it at a random moment, then run the sweeper.

    Returns the consumer and how long it took to boot and deliver its first batch.
    """
    before, began = journal_lines(journal), time.monotonic()
    proc = pool.start()
    wait_for(lambda: journal_lines(journal) > before, 30, "a restarted consumer to deliver", pool.check_alive)
    booted = time.monotonic() - began
    # Anywhere in the next ~8 batches: between batches, before the provider accepted one, or after it did and
    # before the result was recorded (the only case that re-sends).
    time.sleep(rng.uniform(0.0, 8 * DELAY_MS / 1000))
    pool.kill(proc)
    sweep_once()  # what the per-minute task does: re-enqueue the campaign (its Huey tasks died with the worker)
    db.session.commit()
    return proc, booted


def in_flight_duplicates(entries: list[tuple[str, int]], attempts: dict[str, int], killed: set[int]) -> list[str]:
    """Messages delivered more than once; every extra delivery was in flight in a consumer at its kill."""
    deliveries = Counter(u for u, _ in entries)
    assert set(deliveries) == set(attempts), "lost messages, or deliveries of unknown ones"
    assert all(n <= attempts[u] for u, n in deliveries.items()), "a delivery without a claim"
    pids: dict[str, list[int]] = defaultdict(list)
    for u, pid in entries:
        pids[u].append(pid)
    duplicates = sorted(u for u, n in deliveries.items() if n > 1)
    # The last delivery is the recorded one; each earlier one was made by a consumer the test killed, and a
    # consumer can have at most one batch per thread delivered but not recorded when it dies.
    unrecorded = Counter(pid for u in duplicates for pid in pids[u][:-1])
    assert set(unrecorded) <= killed
    assert all(n <= BATCH * THREADS for n in unrecorded.values()), unrecorded
    assert len(duplicates) == sum(1 for u in duplicates if attempts[u] > 1)
    return duplicates


@pytest.mark.slow
def test_sigkill_mid_campaign_loses_nothing_and_resends_only_what_was_in_flight(
        tmp_path, monkeypatch, request, record_property) -> None:
    devices, journal, lease = 3000, tmp_path / "journal.txt", 3
    env = consumer_env(tmp_path / "instance", f"sqlite:///{tmp_path / 'webadmin.sqlite3'}", lease_seconds=lease)
    app = queue_app(monkeypatch, env)
    seed = random.randrange(2**32)
    began = time.monotonic()
    with app.app_context(), Consumers(env, tmp_path) as pool:
        db.create_all()
        campaign_id = make_campaign(devices, delay_ms=DELAY_MS, journal=str(journal))
        campaigns.start(db.session.get(Campaign, campaign_id), actor="test")  # dispatch tasks → SQLite queue
        rng = random.Random(seed)
        rounds = [kill_mid_campaign(pool, journal, rng) for _ in range(KILLS)]
        delivered_before_last_start, last_start = journal_lines(journal), time.monotonic()
        pool.start()
        wait_for(campaign_sent(campaign_id, sweep_every=lease), 45, "the campaign to be sent", pool.check_alive)
        finished = time.monotonic()
        attempts = assert_one_debug_message_per_device(campaign_id, devices)
    duplicates = in_flight_duplicates(journal_entries(journal), attempts, {proc.pid for proc, _ in rounds})
    extra = journal_lines(journal) - devices
    assert len(duplicates) <= extra <= KILLS * BATCH * THREADS
    reclaimed = sum(1 for n in attempts.values() if n > 1)
    report(request, record_property, "SIGKILL reliability", [
        f"seed {seed}: {KILLS} kills of a {THREADS}-thread consumer, {devices} devices, batches of {BATCH}, "
        f"{DELAY_MS} ms per batch, lease {lease} s",
        "consumer boot to first delivery: " + ", ".join(f"{booted:.1f} s" for _, booted in rounds),
        f"{delivered_before_last_start} deliveries before the last restart, the rest in {finished - last_start:.1f} s;"
        f" {finished - began:.1f} s in all",
        f"claimed more than once: {reclaimed}; delivered more than once (in flight at a kill): {len(duplicates)} "
        f"messages, {extra} extra deliveries; most attempts: {max(attempts.values())}",
        textwrap.fill("duplicates: " + (" ".join(duplicates) or "none"), 120),
    ], kills=KILLS, in_flight_duplicates=len(duplicates), extra_deliveries=extra, reclaimed=reclaimed,
        duplicate_uuids=" ".join(duplicates))


# ----------------------------------------------------------------------- four consumers, PostgreSQL + Redis


@contextmanager
def scratch_postgres(base_url: str) -> Iterator[str]:
    """A database of our own on the test server, dropped afterwards (the `test` database is not touched)."""
    url = make_url(normalize_database_url(base_url))
    name = f"webadmin_reliability_{os.getpid()}"
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


@pytest.mark.slow
def test_four_consumers_on_postgresql_and_redis_deliver_each_message_once(
        tmp_path, monkeypatch, request, record_property) -> None:
    need(postgres_url() is not None, "PostgreSQL not configured (set WEBADMIN_TEST_DATABASE_URL)")
    need(redis_url() is not None, "Redis not configured (set WEBADMIN_TEST_REDIS_URL)")
    devices, journal = 5000, tmp_path / "journal.txt"
    with scratch_postgres(postgres_url() or "") as database_url, scratch_redis(redis_url() or "") as queue_url:
        env = consumer_env(tmp_path / "instance", database_url, queue_url, dispatch_fanout=8)
        app = queue_app(monkeypatch, env)
        with app.app_context(), Consumers(env, tmp_path) as pool:
            try:
                db.create_all()
                campaign_id = make_campaign(devices, delay_ms=400, journal=str(journal))
                consumers = {pool.start().pid for _ in range(4)}
                wait_for(pool.started, 30, "four consumers to start", pool.check_alive)
                began = time.monotonic()
                campaigns.start(db.session.get(Campaign, campaign_id), actor="test")  # 8 tasks → Redis
                wait_for(campaign_sent(campaign_id), 45, "the campaign to be sent", pool.check_alive)
                elapsed = time.monotonic() - began
                attempts = assert_one_debug_message_per_device(campaign_id, devices)
            finally:
                db.session.remove()
                db.engine.dispose()
    entries = journal_entries(journal)
    deliveries = Counter(u for u, _ in entries)
    assert set(deliveries) == set(attempts)
    assert [u for u, n in deliveries.items() if n > 1] == []
    assert set(attempts.values()) == {1}  # SKIP LOCKED: no row was ever claimed by two workers
    per_consumer = Counter(pid for _, pid in entries)
    assert set(per_consumer) <= consumers and len(per_consumer) > 1
    report(request, record_property, "Four consumers on PostgreSQL + Redis", [
        f"{devices} messages in {elapsed:.1f} s, 0 duplicates",
        "per consumer: " + ", ".join(f"{pid}: {n}" for pid, n in sorted(per_consumer.items())),
    ], consumers_that_worked=len(per_consumer), duplicates=0)


# --------------------------------------------------------------------------------------- double submission


@pytest.mark.slow
def test_two_concurrent_starts_materialise_the_campaign_once(app, push_app, manual_dispatch) -> None:
    devices = 2000
    db.session.execute(insert(Device), [{"app_id": push_app.id, "platform": "android", "token": f"dbl-{i}"}
                                        for i in range(devices)])
    campaign = campaigns.create_campaign(CampaignDraft(app_id=push_app.id, text="Twice?"), actor="test")
    db.session.commit()
    campaign_id = campaign.id
    barrier = threading.Barrier(2)
    outcomes: list[int | ServiceError] = []

    def click_send() -> None:
        with app.app_context():
            mine = db.session.get(Campaign, campaign_id)
            barrier.wait(timeout=10)
            try:
                outcomes.append(campaigns.start(mine, actor="test"))
            except ServiceError as exc:
                outcomes.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=click_send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(outcomes, key=lambda o: isinstance(o, ServiceError))[0] == devices
    errors = [o for o in outcomes if isinstance(o, ServiceError)]
    assert [e.message for e in errors] == ["Cannot send a campaign that is sending."]
    db.session.expire_all()
    device_ids = db.session.scalars(select(Message.device_id).where(Message.campaign_id == campaign_id)).all()
    assert len(device_ids) == len(set(device_ids)) == devices
    assert db.session.get(Campaign, campaign_id).targeted == devices
    assert manual_dispatch == [campaign_id]  # handed to the workers once
