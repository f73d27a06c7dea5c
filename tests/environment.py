"""What the test machine offers (PostgreSQL, Redis, Chromium), and the CI rule: never skip there."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, reason: str) -> None:
    """Skip with a reason on a laptop that lacks something; fail under CI=true, where it must run."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} — CI must run this test, not skip it", pytrace=False)
    pytest.skip(reason)


def postgres_url() -> str | None:
    """The PostgreSQL URL for tests, if configured."""
    return os.environ.get("WEBADMIN_TEST_DATABASE_URL") or None


def redis_url() -> str | None:
    """The Redis URL for tests, if configured."""
    return os.environ.get("WEBADMIN_TEST_REDIS_URL") or None


def chromium_path() -> str | None:
    """Debian's Chromium, which Playwright drives (it cannot download its own browser here)."""
    return os.environ.get("WEBADMIN_CHROMIUM") or shutil.which("chromium") or None
