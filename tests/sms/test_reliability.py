"""At most one SMS per subscriber when consumers die: two real `flask worker` processes share the fallback run and
are SIGKILLed mid-way (SQLite + SQLite queue), once through the Debug backend (which cannot refuse a duplicate) and
once through a stateful fake SMSAPI (which can, by idx + check_idx=1); and several workers sharing the run on
PostgreSQL.

The Debug backend's `delay_ms` makes each batch take long enough to kill a worker mid-way, and its journal gets a
line per SMS it accepted. The fake SMSAPI accepts an SMS at once but answers `accept_delay` later, so a kill can
land between "SMSAPI has it" and "the row says so"; it remembers each idx and counts deliveries itself.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from tests.environment import need, postgres_url
from tests.factories import make_app
from tests.providers.fakes import ThreadedFake
from tests.sending.test_reliability import Consumers, consumer_env, queue_app, scratch_postgres, wait_for
from tests.sms.conftest import journal_lines
from tests.sms.fake_smsapi import FakeSmsapi
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.audience import Device, Subscriber
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.sms import SmsChannel, SmsMessage
from webadmin.models.types import utcnow
from webadmin.sms.fallback import WORKER_LOST, send_pending, tick

PEOPLE = 300
BATCH = 10  # WEBADMIN_SMS_BATCH_SIZE of the consumers
THREADS = 1  # per consumer: two consumers run at once
KILLS = 2
DELAY_MS = 300  # per batch (Debug) or per request (the fake SMSAPI answers that late; a batch's requests overlap)
LEASE = 2
TOKEN = "smsapi-reliability-token"


@pytest.fixture(autouse=True)
def _engine_config() -> None:
    """Replaces the package's autouse fixture: these tests build their own apps, on purpose."""


def sent_campaign_without_opens(people: int, backend: str = "debug", options: dict[str, Any] | None = None,
                                **credentials: object) -> int:
    """People with phones, each with one device whose push went out an hour ago unopened; the SMS channel."""
    app_row = make_app("Reliability")
    hour_ago = utcnow() - timedelta(hours=1)
    db.session.execute(insert(Subscriber), [{"subscriber_key": f"p{i}@example.com", "phone": f"+48500{i:06d}"}
                                            for i in range(people)])
    ids = dict(db.session.execute(select(Subscriber.subscriber_key, Subscriber.id)).all())
    db.session.execute(insert(Device), [{"app_id": app_row.id, "platform": "android", "token": f"sim-rel-{i}",
                                         "subscriber_id": ids[f"p{i}@example.com"]} for i in range(people)])
    campaign = Campaign(app_id=app_row.id, text="Half price today", status="sent", started_at=hour_ago,
                        finished_at=hour_ago, targeted=people, sent=people, sms_fallback_seconds=60,
                        sms_fallback_text="Half price today https://nibs.example/o/1")
    db.session.add(campaign)
    db.session.flush()
    devices = dict(db.session.execute(select(Device.token, Device.id)).all())
    db.session.execute(insert(Message), [
        {"uuid": f"00000000-0000-4000-8000-{i:012d}", "campaign_id": campaign.id, "device_id": devices[f"sim-rel-{i}"],
         "recipient": f"p{i}@example.com", "state": "DEBUG", "backend": "debug", "sent_at": hour_ago,
         "created_at": hour_ago} for i in range(people)])
    db.session.add(SmsChannel(backend=backend, sender="Nibs", options=options or {},
                              credentials_encrypted=encrypt_credentials(credentials)))
    db.session.commit()
    return campaign.id


def active_rows(campaign_id: int) -> int:
    """Rows still waiting, retrying or being sent."""
    db.session.commit()
    return len(db.session.scalars(select(SmsMessage.id).where(
        SmsMessage.campaign_id == campaign_id,
        SmsMessage.state.in_(("WAITING", "ERROR_RETRY", "SENDING")))).all())


def _rows(campaign_id: int) -> list[Any]:
    """The campaign's SMS rows, fresh; one per person, none leased."""
    db.session.commit()
    rows = db.session.execute(select(SmsMessage.uuid, SmsMessage.phone, SmsMessage.state, SmsMessage.error,
                                     SmsMessage.lease_until).where(SmsMessage.campaign_id == campaign_id)).all()
    assert len(rows) == PEOPLE and len({r.phone for r in rows}) == PEOPLE
    assert all(r.lease_until is None for r in rows)
    return rows


def assert_nobody_got_two(campaign_id: int, journal: Path) -> str:
    """Debug: no number twice in the journal; every recorded row delivered; the others ended as worker-lost."""
    rows = _rows(campaign_id)
    delivered = journal_lines(journal)
    per_number = Counter(to for _, _, to in delivered)
    assert [n for n, count in per_number.items() if count > 1] == []  # nobody got two SMS
    journaled = {u for u, _, _ in delivered}
    states = Counter(r.state for r in rows)
    assert set(states) <= {"DEBUG", "ERROR"}
    assert all(r.uuid in journaled for r in rows if r.state == "DEBUG")  # recorded means delivered
    assert all(r.error == WORKER_LOST for r in rows if r.state == "ERROR")  # the only way to end unsent here
    lost_unsent = sum(1 for r in rows if r.state == "ERROR" and r.uuid not in journaled)
    return f"rows {dict(states)}; in flight at a kill and not delivered: {lost_unsent}"


def assert_one_delivery_per_idx(campaign_id: int, smsapi: FakeSmsapi) -> str:
    """SMSAPI: every row SENT and delivered exactly once (the lost ones were re-sent and refused as duplicates)."""
    rows = _rows(campaign_id)
    assert Counter(r.state for r in rows) == {"SENT": PEOPLE}
    idx = {r.uuid.replace("-", "") for r in rows}
    per_idx = smsapi.per_idx()
    assert set(per_idx) == idx and set(per_idx.values()) == {1}  # one delivery per idx, none missing
    assert set(smsapi.per_number().values()) == {1} and len(smsapi.deliveries) == PEOPLE
    requests = smsapi.server.calls("/sms.do")
    assert all(r.form["check_idx"] == "1" and r.form["idx"] in idx for r in requests)
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in requests)
    earlier = sum(1 for r in rows if r.error and "accepted earlier" in r.error)
    assert earlier == len(smsapi.refused_duplicates)  # each refused duplicate was recorded as the SMS it was
    return (f"{len(requests)} requests for {PEOPLE} SMS; re-sent after a kill and refused as duplicates (error 53): "
            f"{earlier}")


def _kill_and_restart(pool: Consumers, delivered: Callable[[], int], rng: random.Random) -> int:
    """Two consumers at once; KILLS times, SIGKILL one of them mid-run and start another. Returns the kills."""
    procs = [pool.start(THREADS), pool.start(THREADS)]
    for _ in range(KILLS):
        before = delivered()
        wait_for(lambda b=before: delivered() > b, 60, "a consumer to send", pool.check_alive)
        time.sleep(rng.uniform(0.0, 3 * DELAY_MS / 1000))
        pool.kill(procs.pop(rng.randrange(len(procs))))
        procs.append(pool.start(THREADS))  # the other one keeps sending meanwhile
    return KILLS


def _run_to_the_end(campaign_id: int, pool: Consumers) -> None:
    """What the periodic run does, until every row is final: recover stranded rows, queue sending again."""

    def finished() -> bool:
        if active_rows(campaign_id):
            time.sleep(LEASE)
            tick()
            return False
        return True

    wait_for(finished, 90, "every SMS row to be final", pool.check_alive)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["debug", "smsapi"])
def test_sigkill_during_the_fallback_run_never_sends_anyone_two_sms(backend, tmp_path, monkeypatch, request) -> None:
    journal = tmp_path / "sms-journal.txt"
    env = consumer_env(tmp_path / "instance", f"sqlite:///{tmp_path / 'webadmin.sqlite3'}", lease_seconds=LEASE,
                       dispatch_fanout=2)
    env["WEBADMIN_SMS_BATCH_SIZE"] = str(BATCH)
    app = queue_app(monkeypatch, env)
    rng = random.Random(seed := random.randrange(2**32))
    with app.app_context(), Consumers(env, tmp_path) as pool, ThreadedFake() as server:
        db.create_all()
        smsapi = FakeSmsapi(server, TOKEN, accept_delay=DELAY_MS / 1000)
        if backend == "smsapi":
            campaign_id = sent_campaign_without_opens(PEOPLE, "smsapi", {"endpoint": server.url, "timeout": 5.0},
                                                      token=TOKEN, account="smsapi.pl")
        else:
            campaign_id = sent_campaign_without_opens(PEOPLE, delay_ms=DELAY_MS, journal=str(journal))

        def delivered() -> int:
            return len(smsapi.deliveries) if backend == "smsapi" else len(journal_lines(journal))

        from webadmin.tasks import sms_fallback

        sms_fallback()  # the periodic run, queued now instead of at the next minute
        kills = _kill_and_restart(pool, delivered, rng)
        _run_to_the_end(campaign_id, pool)
        outcome = (assert_one_delivery_per_idx(campaign_id, smsapi) if backend == "smsapi"
                   else assert_nobody_got_two(campaign_id, journal))
    body = (f"{backend}, seed {seed}: {kills} kills with two {THREADS}-thread consumers running, {PEOPLE} subscribers, "
            f"batches of {BATCH}, {DELAY_MS} ms per batch; {outcome}")
    print(f"\nSMS SIGKILL\n{body}")
    request.node.add_report_section("call", "SMS SIGKILL", body)


@pytest.mark.slow
def test_workers_on_postgresql_claim_disjoint_rows(tmp_path, monkeypatch) -> None:
    need(postgres_url() is not None, "PostgreSQL not configured (set WEBADMIN_TEST_DATABASE_URL)")
    journal = tmp_path / "sms-journal.txt"
    with scratch_postgres(postgres_url() or "") as database_url:
        env = consumer_env(tmp_path / "instance", database_url)
        env["WEBADMIN_SMS_BATCH_SIZE"] = str(BATCH)
        app = queue_app(monkeypatch, env)
        app.config.update(QUEUE_IMMEDIATE=False, ENGINE_KEEP_CONNECTIONS=False)
        with app.app_context():
            try:
                db.create_all()
                campaign_id = sent_campaign_without_opens(PEOPLE, delay_ms=20, journal=str(journal))
                from webadmin.sms.fallback import materialize_due

                assert materialize_due(utcnow()) == PEOPLE
                reports, barrier = [], threading.Barrier(4)

                def worker() -> None:
                    with app.app_context():
                        barrier.wait(10)
                        reports.append(send_pending())
                        db.session.remove()

                threads = [threading.Thread(target=worker) for _ in range(4)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(60)
                assert sum(r.sent for r in reports) == PEOPLE and sum(1 for r in reports if r.sent) > 1
                db.session.commit()
                attempts = db.session.scalars(select(SmsMessage.attempts).where(
                    SmsMessage.campaign_id == campaign_id)).all()
                assert Counter(attempts) == {1: PEOPLE}  # SKIP LOCKED: no row claimed twice
                assert len(journal_lines(journal)) == PEOPLE
            finally:
                db.session.remove()
                db.engine.dispose()
