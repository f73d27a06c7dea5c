"""Retry policy: exponential backoff with jitter, a floor from Retry-After, a ceiling on attempts and age."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed message again, and when to give up."""

    max_attempts: int = 5
    max_age: timedelta = timedelta(hours=24)
    base_delay: float = 30.0  # seconds before the first retry
    max_delay: float = 3600.0
    jitter: float = 0.2  # ± share of the delay, so retries of one batch do not arrive together

    def delay(self, attempts: int, retry_after: float | None, rng: random.Random | None = None) -> float:
        """Seconds to wait after the given number of attempts; never less than the provider's Retry-After."""
        rng = rng or random
        backoff = min(self.max_delay, self.base_delay * (2 ** max(0, attempts - 1)))
        backoff *= 1 + rng.uniform(-self.jitter, self.jitter)
        return max(backoff, retry_after or 0.0)

    def gives_up(self, attempts: int, created_at: datetime, now: datetime) -> str | None:
        """The reason to stop retrying, or None to retry."""
        if attempts >= self.max_attempts:
            return f"gave up after {attempts} attempts"
        if now - created_at >= self.max_age:
            return f"gave up: older than {self.max_age}"
        return None
