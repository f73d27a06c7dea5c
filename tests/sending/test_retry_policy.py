"""Retry policy: doubling backoff with jitter, the Retry-After floor, the attempt and age ceilings (no database)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from webadmin.sending.retry import RetryPolicy

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _engine_config() -> None:
    """Replaces the package's autouse fixture: these tests need no app or database."""


def test_backoff_doubles_per_attempt_with_the_seeded_jitter():
    policy = RetryPolicy(base_delay=30.0, jitter=0.2)
    rng, mirror = random.Random(7), random.Random(7)
    for attempts, base in [(1, 30), (2, 60), (3, 120), (4, 240), (5, 480)]:
        expected = base * (1 + mirror.uniform(-0.2, 0.2))
        assert policy.delay(attempts, None, rng) == expected


def test_without_jitter_the_delay_is_exactly_doubled_and_capped():
    policy = RetryPolicy(base_delay=30.0, jitter=0.0, max_delay=3600.0)
    assert [policy.delay(n, None) for n in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert policy.delay(0, None) == 30  # a row never attempted waits the base delay


def test_jitter_spreads_retries_of_one_batch_within_its_bounds():
    policy = RetryPolicy(base_delay=100.0, jitter=0.2)
    rng = random.Random(11)
    delays = [policy.delay(1, None, rng) for _ in range(500)]
    assert all(80.0 <= d <= 120.0 for d in delays)
    assert min(delays) < 85 and max(delays) > 115 and len(set(delays)) == 500  # not all at once


def test_retry_after_is_a_floor_never_a_cap():
    policy = RetryPolicy(base_delay=30.0, jitter=0.0)
    assert policy.delay(1, 120.0) == 120.0  # the provider asks for longer: honoured
    assert policy.delay(4, 5.0) == 240.0  # shorter than the backoff: the backoff stands


def test_gives_up_at_the_attempt_ceiling_or_the_age_ceiling():
    policy = RetryPolicy(max_attempts=3, max_age=timedelta(hours=24))
    fresh = NOW - timedelta(hours=1)
    assert policy.gives_up(2, fresh, NOW) is None
    assert policy.gives_up(3, fresh, NOW) == "gave up after 3 attempts"
    assert policy.gives_up(1, NOW - timedelta(hours=24), NOW) == "gave up: older than 1 day, 0:00:00"
    assert policy.gives_up(1, NOW - timedelta(hours=23, minutes=59), NOW) is None
