"""Fixtures of the provider tests: clean Marketing Cloud caches (the service account is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from webadmin.providers import marketing_cloud


@pytest.fixture(autouse=True)
def _clean_mc_cache() -> Iterator[None]:
    """Each test starts and ends with an empty Marketing Cloud token cache and contact ledger."""
    marketing_cloud.clear_token_cache()
    marketing_cloud.LEDGER.clear()
    yield
    marketing_cloud.clear_token_cache()
    marketing_cloud.LEDGER.clear()
