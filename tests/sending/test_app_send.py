"""Marketing Cloud "all users" → ONE messageApp request per campaign, through the engine against the local fake
Marketing Cloud (auth + push/v1 on one aiohttp server): the wire format, exactly one request however many batches,
dispatch runs and concurrent workers, the claim's outcomes (retry, refusal, unknown), and the cases that stay on
messageContact (opt-in off, a platform filter)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from tests.providers.fakes import Recorded, ThreadedFake, reply, sleep
from webadmin.crypto import encrypt_credentials
from webadmin.extensions import db
from webadmin.models.analytics import CampaignRollup
from webadmin.models.audience import Device, Subscriber
from webadmin.models.campaign import AppSendState, Campaign, CampaignAppSend, CampaignStatus, Channel
from webadmin.models.message import Message
from webadmin.models.types import utcnow
from webadmin.providers import marketing_cloud
from webadmin.sending import app_sends
from webadmin.sending.engine import dispatch
from webadmin.services import campaigns
from webadmin.services.campaigns import CampaignDraft

MESSAGE_ID = "MTIzOjExNDow"
APP = f"/push/v1/messageApp/{MESSAGE_ID}/send"
CONTACT = f"/push/v1/messageContact/{MESSAGE_ID}/send"
CREDS = {"client_id": "cid-1", "client_secret": "mc-secret", "message_id": MESSAGE_ID, "auth_mode": "v2"}


def _token(rec: Recorded) -> Any:
    assert rec.request is not None
    return reply({"access_token": "tok-1", "expires_in": 1079, "rest_instance_url": f"http://{rec.request.host}/"})(rec)


def _accepted(rec: Recorded) -> Any:
    return reply({"tokenId": "app-job-1"}, status=202)(rec)


@pytest.fixture(autouse=True)
def _clean_mc() -> Iterator[None]:
    marketing_cloud.clear_token_cache()
    marketing_cloud.LEDGER.clear()
    yield
    marketing_cloud.clear_token_cache()
    marketing_cloud.LEDGER.clear()


@pytest.fixture
def fake_mc() -> Iterator[Any]:
    """A fake Marketing Cloud on its own thread: tokens, and 202 {"tokenId"} on both send endpoints."""
    with ThreadedFake() as server:
        server.route("POST", "/v2/token", _token)
        server.route("POST", APP, _accepted)
        server.route("POST", CONTACT, lambda rec: reply({"tokenId": "contact-job"}, status=202)(rec))
        yield server


def _channel(app_id: int, fake: Any, platform: str = "android", **options: Any) -> Channel:
    channel = Channel(app_id=app_id, platform=platform, backend="marketing_cloud", name=f"MC {platform}",
                      options={"endpoint": fake.url, "auth_endpoint": fake.url, "timeout": 2, **options},
                      credentials_encrypted=encrypt_credentials(CREDS))
    db.session.add(channel)
    db.session.commit()
    return channel


def _audience(app_id: int, n: int, platforms: tuple[str, ...] = ("android",)) -> None:
    db.session.execute(insert(Subscriber), [{"subscriber_key": f"s{i}@example.com"} for i in range(n)])
    ids = db.session.scalars(select(Subscriber.id).order_by(Subscriber.id)).all()
    db.session.execute(insert(Device), [
        {"app_id": app_id, "platform": platforms[i % len(platforms)], "token": f"dev-{i}", "subscriber_id": sid}
        for i, sid in enumerate(ids)])
    db.session.commit()


def _campaign(app_id: int, audience: dict[str, Any] | None = None) -> Campaign:
    campaign = campaigns.create_campaign(
        CampaignDraft(app_id=app_id, text="Summer sale", title="Nibs", open_direct="nibs://offers/7",
                      audience=audience), actor="test")
    db.session.commit()
    campaigns.start(campaign, actor="test")
    return campaign


def _states(campaign_id: int) -> dict[tuple[str, str | None], int]:
    rows = db.session.execute(select(Message.state, Message.provider_message_id, func.count())
                              .where(Message.campaign_id == campaign_id)
                              .group_by(Message.state, Message.provider_message_id)).all()
    return {(state, pid): n for state, pid, n in rows}


def _claim(campaign_id: int) -> CampaignAppSend:
    db.session.expire_all()
    return db.session.scalars(select(CampaignAppSend).where(CampaignAppSend.campaign_id == campaign_id)).one()


def test_all_users_goes_out_as_one_messageapp_request_on_the_wire(push_app, manual_dispatch, fake_mc):
    _channel(push_app.id, fake_mc, all_users_app=True)
    _audience(push_app.id, 7)
    campaign = _campaign(push_app.id)
    report = dispatch(campaign.id)
    assert report.stopped_because == "finished"
    [call] = fake_mc.calls(APP)
    assert call.headers["Authorization"] == "Bearer tok-1"
    assert call.json == {"override": True, "messageText": "Summer sale", "title": "Nibs",
                         "openDirect": "nibs://offers/7"}
    assert fake_mc.calls(CONTACT) == []
    assert _states(campaign.id) == {("SENT", "app-job-1"): 7}
    db.session.expire_all()
    stored = db.session.get(Campaign, campaign.id)
    assert (stored.status, stored.sent, stored.failed) == ("sent", 7, 0)
    assert db.session.scalar(select(CampaignRollup.sent).where(CampaignRollup.campaign_id == campaign.id)) == 7
    claim = _claim(campaign.id)
    assert (claim.state, claim.provider_message_id, claim.attempts) == ("sent", "app-job-1", 1)


def test_one_request_across_many_batches_and_dispatch_runs(app, push_app, manual_dispatch, fake_mc):
    # Two channels of the same MobilePush message (Android and iOS) share the one request; batches of 2.
    app.config["ENGINE_BATCH_SIZE"] = 2
    _channel(push_app.id, fake_mc, "android", all_users_app=True, batch_size=2)
    _channel(push_app.id, fake_mc, "ios", all_users_app=True, batch_size=2)
    _audience(push_app.id, 11, ("android", "ios"))
    campaign = _campaign(push_app.id)
    runs = 0
    while True:
        runs += 1
        report = dispatch(campaign.id, max_batches=1)
        if report.stopped_because == "finished":
            break
        assert runs < 20
    assert runs >= 6  # 11 messages, 2 per batch: several runs, each of one batch
    assert len(fake_mc.calls(APP)) == 1 and fake_mc.calls(CONTACT) == []
    assert _states(campaign.id) == {("SENT", "app-job-1"): 11}
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).sent == 11
    assert db.session.scalar(select(func.count()).select_from(CampaignAppSend)) == 1


def test_concurrent_workers_send_it_once(app, push_app, manual_dispatch, fake_mc, monkeypatch):
    # The first request takes 0.6 s: the other worker meets the claim in flight and waits instead of sending.
    fake_mc.route("POST", APP, sleep(0.6, _accepted))
    monkeypatch.setattr(app_sends, "WAIT_SECONDS", 0.2)
    app.config["ENGINE_BATCH_SIZE"] = 5
    _channel(push_app.id, fake_mc, all_users_app=True, batch_size=5)
    _audience(push_app.id, 20)
    campaign = _campaign(push_app.id)
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with app.app_context():
                barrier.wait()
                dispatch(campaign.id)
                db.session.remove()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    deadline = time.monotonic() + 10
    while db.session.scalar(select(Campaign.status).where(Campaign.id == campaign.id)) != "sent":
        dispatch(campaign.id)  # rows a waiting worker gave back until it is due
        db.session.commit()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert len(fake_mc.calls(APP)) == 1
    assert _states(campaign.id) == {("SENT", "app-job-1"): 20}
    db.session.expire_all()
    stored = db.session.get(Campaign, campaign.id)
    assert (stored.sent, stored.failed, stored.retrying) == (20, 0, 0)
    # Rows that waited were given back unsent, not counted as an attempt.
    assert db.session.scalar(select(func.max(Message.number_of_send_attempts))) == 1


def test_opt_in_off_stays_on_messagecontact(push_app, manual_dispatch, fake_mc):
    _channel(push_app.id, fake_mc)
    _audience(push_app.id, 6)
    campaign = _campaign(push_app.id)
    assert dispatch(campaign.id).stopped_because == "finished"
    [call] = fake_mc.calls(CONTACT)
    assert sorted(call.json["subscriberKeys"]) == sorted(f"s{i}@example.com" for i in range(6))
    assert fake_mc.calls(APP) == []
    assert _states(campaign.id) == {("SENT", "contact-job"): 6}
    assert db.session.scalar(select(func.count()).select_from(CampaignAppSend)) == 0


@pytest.mark.parametrize("audience", [{"type": "all", "platforms": ["android"]},
                                      {"type": "platforms", "platforms": ["android"]},
                                      {"type": "keys", "keys": ["s1@example.com", "s2@example.com"]}])
def test_platform_filtered_or_targeted_campaigns_stay_on_messagecontact(push_app, manual_dispatch, fake_mc,
                                                                       audience):
    _channel(push_app.id, fake_mc, all_users_app=True)
    _audience(push_app.id, 4)
    campaign = _campaign(push_app.id, audience)
    assert dispatch(campaign.id).stopped_because == "finished"
    assert fake_mc.calls(APP) == []
    assert len(fake_mc.calls(CONTACT)) == 1
    assert sum(_states(campaign.id).values()) == _states(campaign.id)[("SENT", "contact-job")]


def test_retryable_failure_is_retried_on_the_same_claim(app, push_app, manual_dispatch, fake_mc):
    app.config.update(ENGINE_RETRY_BASE_SECONDS=0.0, ENGINE_BATCH_SIZE=3)
    fake_mc.route("POST", APP, reply({"message": "busy"}, status=503, headers={"Retry-After": "0"}), _accepted)
    _channel(push_app.id, fake_mc, all_users_app=True, batch_size=3)
    _audience(push_app.id, 5)
    campaign = _campaign(push_app.id)
    first = dispatch(campaign.id, max_batches=1)
    assert first.retried == 3
    claim = _claim(campaign.id)
    assert (claim.state, claim.attempts) == (AppSendState.RETRY.value, 1)
    assert "HTTP_503" in claim.error
    assert dispatch(campaign.id).stopped_because == "finished"
    assert len(fake_mc.calls(APP)) == 2  # the refused one and its retry, never more
    assert _states(campaign.id) == {("SENT", "app-job-1"): 5}
    claim = _claim(campaign.id)
    assert (claim.state, claim.attempts, claim.provider_message_id) == ("sent", 2, "app-job-1")
    db.session.expire_all()
    stored = db.session.get(Campaign, campaign.id)
    assert (stored.sent, stored.retrying, stored.failed) == (5, 0, 0)


def test_retries_end_at_the_attempt_ceiling_for_every_message(app, push_app, manual_dispatch, fake_mc):
    app.config.update(ENGINE_RETRY_BASE_SECONDS=0.0, ENGINE_MAX_ATTEMPTS=2, ENGINE_BATCH_SIZE=2)
    fake_mc.route("POST", APP, reply({"message": "busy"}, status=503, headers={"Retry-After": "0"}))
    _channel(push_app.id, fake_mc, all_users_app=True, batch_size=2)
    _audience(push_app.id, 5)
    campaign = _campaign(push_app.id)
    for _ in range(10):
        if dispatch(campaign.id).stopped_because == "finished":
            break
    assert len(fake_mc.calls(APP)) == 2  # ENGINE_MAX_ATTEMPTS requests, however many batches met the claim
    claim = _claim(campaign.id)
    assert claim.state == AppSendState.FAILED.value and "gave up after 2 attempts" in claim.error
    assert _states(campaign.id) == {("ERROR", None): 5}
    db.session.expire_all()
    stored = db.session.get(Campaign, campaign.id)
    assert (stored.status, stored.failed, stored.retrying, stored.sent) == ("sent", 5, 0, 0)


@pytest.mark.parametrize(("answers", "why"), [
    ((reply({"message": "Not Authorized"}, status=401),), "credentials refused"),
    ((reply({"message": "messageText is required", "errorcode": 10002}, status=400),), "HTTP_400"),
])
def test_payload_or_auth_error_pauses_the_campaign(push_app, manual_dispatch, fake_mc, answers, why):
    fake_mc.route("POST", APP, *answers)
    channel = _channel(push_app.id, fake_mc, all_users_app=True)
    _audience(push_app.id, 4)
    campaign = _campaign(push_app.id)
    report = dispatch(campaign.id)
    assert report.stopped_because.startswith("paused") and why in report.stopped_because
    db.session.expire_all()
    stored = db.session.get(Campaign, campaign.id)
    assert stored.status == CampaignStatus.PAUSED.value and (stored.sent, stored.failed) == (0, 0)
    assert _states(campaign.id) == {("WAITING", None): 4}  # released unsent: no attempt used
    assert db.session.scalar(select(func.max(Message.number_of_send_attempts))) == 0
    assert _claim(campaign.id).state == AppSendState.REFUSED.value
    assert db.session.get(Channel, channel.id).error
    assert fake_mc.calls(CONTACT) == []
    # Fixed and resumed: the same claim is taken again and the one request goes out.
    fake_mc.route("POST", APP, _accepted)
    campaigns.resume(db.session.get(Campaign, campaign.id), actor="test")
    assert dispatch(campaign.id).stopped_because == "finished"
    assert _states(campaign.id) == {("SENT", "app-job-1"): 4}
    assert _claim(campaign.id).state == "sent"


def test_no_answer_is_unknown_and_never_sent_again(app, push_app, manual_dispatch, fake_mc):
    app.config["ENGINE_RETRY_BASE_SECONDS"] = 0.0
    fake_mc.route("POST", APP, sleep(5, _accepted))  # longer than the channel's 1 s timeout
    _channel(push_app.id, fake_mc, all_users_app=True, timeout=1, batch_size=2)
    _audience(push_app.id, 5)
    campaign = _campaign(push_app.id)
    assert dispatch(campaign.id).stopped_because == "finished"
    assert len(fake_mc.calls(APP)) == 1
    assert _states(campaign.id) == {("ERROR", None): 5}
    errors = db.session.scalars(select(Message.error).where(Message.campaign_id == campaign.id)).all()
    assert all(e.startswith("OUTCOME_UNKNOWN") and "not sent again" in e for e in errors)
    claim = _claim(campaign.id)
    assert claim.state == AppSendState.UNKNOWN.value and "TimeoutError" in claim.error
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).failed == 5


def test_a_worker_lost_after_the_claim_makes_it_unknown_not_a_second_send(push_app, manual_dispatch, fake_mc):
    # A worker claimed the request (row committed) and died before recording an answer: its lease ran out.
    _channel(push_app.id, fake_mc, all_users_app=True)
    _audience(push_app.id, 3)
    campaign = _campaign(push_app.id)
    now = utcnow()
    db.session.execute(insert(CampaignAppSend).values(
        campaign_id=campaign.id, target=app_sends.target_of(app_sends_route(push_app.id)), state="sending",
        claim_token="t-dead", claimed_by="worker-a:41", attempts=1, lease_until=now - timedelta(seconds=1),
        created_at=now, updated_at=now))
    db.session.commit()
    assert dispatch(campaign.id).stopped_because == "finished"
    assert fake_mc.calls(APP) == [] and fake_mc.calls(CONTACT) == []
    assert _states(campaign.id) == {("ERROR", None): 3}
    error = db.session.scalar(select(Message.error).where(Message.campaign_id == campaign.id).limit(1))
    assert error.startswith("OUTCOME_UNKNOWN") and "worker-a:41" in error
    assert _claim(campaign.id).state == AppSendState.UNKNOWN.value


def test_a_claim_in_flight_elsewhere_defers_the_rows_without_an_attempt(push_app, manual_dispatch, fake_mc):
    _channel(push_app.id, fake_mc, all_users_app=True)
    _audience(push_app.id, 3)
    campaign = _campaign(push_app.id)
    now = utcnow()
    db.session.execute(insert(CampaignAppSend).values(
        campaign_id=campaign.id, target=app_sends.target_of(app_sends_route(push_app.id)), state="sending",
        claim_token="t-live", claimed_by="worker-b:7", attempts=1, lease_until=now + timedelta(seconds=60),
        created_at=now, updated_at=now))
    db.session.commit()
    report = dispatch(campaign.id)
    assert report.sent == 0 and fake_mc.calls(APP) == []
    assert _states(campaign.id) == {("WAITING", None): 3}
    waits = db.session.execute(select(Message.next_attempt_at, Message.number_of_send_attempts)).all()
    assert all(at is not None and at > now and attempts == 0 for at, attempts in waits)
    # The other worker's answer arrives: the deferred rows are then recorded with its tokenId, no request.
    db.session.execute(update(CampaignAppSend).values(state="sent", provider_message_id="their-job",
                                                      lease_until=None))
    db.session.execute(update(Message).values(next_attempt_at=None))
    db.session.commit()
    assert dispatch(campaign.id).stopped_because == "finished"
    assert fake_mc.calls(APP) == []
    assert _states(campaign.id) == {("SENT", "their-job"): 3}


def app_sends_route(app_id: int) -> Any:
    from webadmin.sending.channels import routes_for_app

    return routes_for_app(app_id)["android"]


@pytest.mark.slow
def test_a_consumer_killed_while_the_request_is_on_the_wire_never_sends_it_again(tmp_path, monkeypatch, fake_mc):
    """A real `flask worker` process claims the request and is SIGKILLed while Marketing Cloud has not answered;
    the next consumer finds the claim without an answer once its lease ends and sends nothing."""
    from tests.factories import make_app
    from tests.sending.consumers import Consumers, campaign_sent, consumer_env, queue_app, wait_for

    lease = 2
    fake_mc.route("POST", APP, sleep(120, _accepted))  # the first request never gets its answer
    env = consumer_env(tmp_path / "instance", f"sqlite:///{tmp_path / 'webadmin.sqlite3'}", lease_seconds=lease)
    app = queue_app(monkeypatch, env)
    with app.app_context(), Consumers(env, tmp_path) as pool:
        db.create_all()
        app_row = make_app("Nibs")
        _channel(app_row.id, fake_mc, all_users_app=True, timeout=60)
        _audience(app_row.id, 30)
        campaign = _campaign(app_row.id)  # its dispatch task waits in the SQLite queue
        first = pool.start()
        wait_for(lambda: len(fake_mc.calls(APP)) == 1, 60, "the messageApp request", pool.check_alive)
        pool.kill(first)
        fake_mc.route("POST", APP, _accepted)  # a second request would now succeed: it must not be made
        pool.start()
        wait_for(campaign_sent(campaign.id, sweep_every=lease), 60, "the campaign to end", pool.check_alive)
        assert len(fake_mc.calls(APP)) == 1 and fake_mc.calls(CONTACT) == []
        assert _states(campaign.id) == {("ERROR", None): 30}
        error = db.session.scalar(select(Message.error).where(Message.campaign_id == campaign.id).limit(1))
        assert error.startswith("OUTCOME_UNKNOWN") and "stopped before it recorded an answer" in error
        claim = _claim(campaign.id)
        assert claim.state == AppSendState.UNKNOWN.value and claim.claimed_by.endswith(f":{first.pid}")
        stored = db.session.get(Campaign, campaign.id)
        assert (stored.status, stored.sent, stored.failed, stored.retrying) == ("sent", 0, 30, 0)
