"""Apps that receive pushes, and the API keys they use to register devices."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webadmin.extensions import db
from webadmin.models.types import UTCDateTime, utcnow

PLATFORMS = ("android", "ios", "web")
API_KEY_PREFIX = "wa_"


class App(db.Model):
    """A mobile or web app: its platforms, its deep-link scheme (e.g. `nibs://`) and the https address its app links
    also open at (`web_link_base`, e.g. https://nibs.example: an SMS links nibs://offers/1 as …/offers/1)."""

    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    platforms: Mapped[list[str]] = mapped_column(JSON, default=lambda: list(PLATFORMS))
    deep_link_scheme: Mapped[str | None] = mapped_column(String(40))  # without "://"
    web_link_base: Mapped[str | None] = mapped_column(String(200))  # https only, no trailing slash
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="app", cascade="all, delete-orphan")


def hash_api_key(secret: str) -> str:
    """Keys are long random strings, so a fast hash is enough (no password stretching needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKey(db.Model):
    """A per-app API key. Only its hash is stored; the prefix tells keys apart in lists and logs."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(254))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    app: Mapped[App] = relationship(back_populates="api_keys")

    @staticmethod
    def generate() -> tuple[str, str]:
        """A new (prefix, full secret); the secret is shown once and never stored."""
        prefix = API_KEY_PREFIX + secrets.token_hex(4)
        return prefix, f"{prefix}.{secrets.token_urlsafe(32)}"

    def matches(self, secret: str) -> bool:
        """Constant-time comparison of a presented key with the stored hash."""
        return hmac.compare_digest(self.key_hash, hash_api_key(secret))

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None
