"""At most one SMS per subscriber when consumers die: real `flask worker` processes SIGKILLed during the fallback
run (SQLite + SQLite queue), and several workers sharing the run on PostgreSQL.

The Debug SMS backend's `delay_ms` makes each batch take long enough to kill a worker mid-way, and its journal gets a
line per SMS it accepted, so a second SMS to anyone would show as a second line for their number.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from tests.environment import need, postgres_url
from tests.factories import make_app
from tests.sending.test_reliability import Consumers, consumer_env, queue_app, scratch_postgres, wait_for
from tests.sms.conftest import journal_lines
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.audience import Device, Subscriber
from webadmin.models.campaign import Campaign
from webadmin.models.message import Message
from webadmin.models.sms import SmsChannel, SmsMessage
from webadmin.models.types import utcnow
from webadmin.sms.fallback import WORKER_LOST, send_pending, tick

PEOPLE = 400
BATCH = 10  # WEBADMIN_SMS_BATCH_SIZE of the consumers
THREADS = 2
KILLS = 3
DELAY_MS = 200
LEASE = 2


@pytest.fixture(autouse=True)
def _engine_config() -> None:
    """Replaces the package's autouse fixture: these tests build their own apps, on purpose."""


def sent_campaign_without_opens(people: int, **debug_credentials: object) -> int:
    """People with phones, each with one device whose push went out an hour ago unopened; a Debug SMS channel."""
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
    db.session.add(SmsChannel(backend="debug", sender="Nibs", credentials_encrypted=encrypt_credentials(
        debug_credentials)))
    db.session.commit()
    return campaign.id


def active_rows(campaign_id: int) -> int:
    """Rows still waiting, retrying or being sent."""
    db.session.commit()
    return len(db.session.scalars(select(SmsMessage.id).where(
        SmsMessage.campaign_id == campaign_id,
        SmsMessage.state.in_(("WAITING", "ERROR_RETRY", "SENDING")))).all())


def assert_nobody_got_two(campaign_id: int, journal: Path) -> tuple[Counter, int]:
    """One row per person; every delivered row recorded or ended as worker-lost; no number twice."""
    db.session.commit()
    rows = db.session.execute(select(SmsMessage.uuid, SmsMessage.phone, SmsMessage.state, SmsMessage.error,
                                     SmsMessage.lease_until).where(SmsMessage.campaign_id == campaign_id)).all()
    assert len(rows) == PEOPLE and len({r.phone for r in rows}) == PEOPLE
    delivered = journal_lines(journal)
    per_number = Counter(to for _, _, to in delivered)
    assert [n for n, count in per_number.items() if count > 1] == []  # nobody got two SMS
    assert len({u for u, _, _ in delivered}) == len(delivered)
    journaled = {u for u, _, _ in delivered}
    states = Counter(r.state for r in rows)
    assert set(states) <= {"DEBUG", "ERROR"} and all(r.lease_until is None for r in rows)
    assert all(r.uuid in journaled for r in rows if r.state == "DEBUG")  # recorded means delivered
    assert all(r.error == WORKER_LOST for r in rows if r.state == "ERROR")  # the only way to end unsent here
    lost_unsent = sum(1 for r in rows if r.state == "ERROR" and r.uuid not in journaled)
    return states, lost_unsent


@pytest.mark.slow
def test_sigkill_during_the_fallback_run_never_sends_anyone_two_sms(tmp_path, monkeypatch, request) -> None:
    journal = tmp_path / "sms-journal.txt"
    env = consumer_env(tmp_path / "instance", f"sqlite:///{tmp_path / 'webadmin.sqlite3'}", lease_seconds=LEASE,
                       dispatch_fanout=THREADS)
    env["WEBADMIN_SMS_BATCH_SIZE"] = str(BATCH)
    app = queue_app(monkeypatch, env)
    rng = random.Random(seed := random.randrange(2**32))
    with app.app_context(), Consumers(env, tmp_path) as pool:
        db.create_all()
        campaign_id = sent_campaign_without_opens(PEOPLE, delay_ms=DELAY_MS, journal=str(journal))
        from webadmin.tasks import sms_fallback

        sms_fallback()  # the periodic run, queued now instead of at the next minute
        kills = 0
        for _ in range(KILLS):
            before = len(journal_lines(journal))
            proc = pool.start(THREADS)
            wait_for(lambda b=before: len(journal_lines(journal)) > b, 30, "a consumer to send", pool.check_alive)
            time.sleep(rng.uniform(0.0, 6 * DELAY_MS / 1000))
            pool.kill(proc)
            kills += 1
            time.sleep(LEASE + 0.5)  # the dead worker's leases expire
            tick()  # what the periodic run does: end stranded rows, queue sending again
        pool.start(THREADS)

        def finished() -> bool:
            if active_rows(campaign_id):
                time.sleep(LEASE)
                tick()
                return False
            return True

        wait_for(finished, 60, "every SMS row to be final", pool.check_alive)
        states, lost_unsent = assert_nobody_got_two(campaign_id, journal)
    body = (f"seed {seed}: {kills} kills of a {THREADS}-thread consumer, {PEOPLE} subscribers, batches of {BATCH}, "
            f"{DELAY_MS} ms per batch; rows {dict(states)}; in flight at a kill and not delivered: {lost_unsent}")
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
