"""Reliability with real consumer processes: SIGKILL mid-campaign (SQLite + SQLite queue), four consumers on one
campaign (PostgreSQL + Redis), and two concurrent starts of one campaign.

The Debug backend's `delay_ms` makes a campaign last long enough to kill a worker mid-way; its `journal` gets a
line "<message uuid> <pid>" per delivery, so a re-send after a crash shows as a duplicate line. The consumer
harness is tests/sending/consumers.py; bench/engine_reliability.py runs the same scenarios at full size.
"""

from __future__ import annotations

import asyncio
import os
import random
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import insert, select

from tests.environment import need, postgres_url, redis_url
from tests.sending.consumers import (
    BATCH,
    DELAY_MS,
    THREADS,
    UNRECORDED_PER_THREAD,
    Consumers,
    assert_one_debug_message_per_device,
    campaign_sent,
    consumer_env,
    in_flight_duplicates,
    journal_entries,
    journal_lines,
    kill_mid_campaign,
    make_campaign,
    queue_app,
    scratch_postgres,
    scratch_redis,
    wait_for,
)
from webadmin.extensions import db
from webadmin.models.audience import Device
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.providers.base import PushMessage
from webadmin.providers.debug import DebugBackend
from webadmin.queue import queue_backend
from webadmin.services import ServiceError, campaigns
from webadmin.services.campaigns import CampaignDraft

KILLS = 4


@pytest.fixture(autouse=True)
def _engine_config() -> None:
    """Replaces the package's autouse fixture: the consumer tests build their own apps, on purpose."""


# ----------------------------------------------------------------------------------------------- helpers


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
    assert len(duplicates) <= extra <= KILLS * UNRECORDED_PER_THREAD * BATCH * THREADS
    reclaimed = sum(1 for n in attempts.values() if n > 1)
    # Each consumer always holds a leased batch per thread (the send is ~all of a batch's time), so every kill
    # leaves claimed rows behind that a later consumer must claim again: the kills did land mid-batch.
    assert reclaimed >= 1, "no kill caught a batch in flight: the test proved nothing about recovery"
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
                assert queue_backend() == "redis"  # the test process queues into Redis…
                db.create_all()
                campaign_id = make_campaign(devices, delay_ms=400, journal=str(journal))
                consumers = {pool.start().pid for _ in range(4)}
                wait_for(pool.started, 30, "four consumers to start", pool.check_alive)
                # …and so do the consumers (they share the instance folder: with the Redis URL ignored, all of
                # them would share its SQLite queue instead and the test would pass all the same).
                assert all(b"threads on the redis queue" in log.read_bytes() for log in pool.procs.values())
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
    assert set(per_consumer) == consumers  # all four took part: 8 dispatch tasks for their 8 threads
    assert not (tmp_path / "instance" / "queue.sqlite3").exists()
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
