"""Fixtures of the provider tests: a throwaway RSA key and a clean Marketing Cloud token cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from webadmin.providers import marketing_cloud


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    """An RSA key made at test time (never committed)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def service_account(rsa_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """A fake Google service-account dict signed with the throwaway key."""
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return {
        "type": "service_account",
        "project_id": "demo-proj",
        "private_key_id": "test-key-1",
        "private_key": pem,
        "client_email": "pusher@demo-proj.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


@pytest.fixture(autouse=True)
def _clean_mc_cache() -> Iterator[None]:
    """Each test starts and ends with an empty Marketing Cloud token cache."""
    marketing_cloud.clear_token_cache()
    yield
    marketing_cloud.clear_token_cache()
