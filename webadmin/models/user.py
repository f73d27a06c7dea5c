"""Staff accounts, their server-side sessions and sign-in attempts."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from webadmin.extensions import db
from webadmin.models.types import UTCDateTime, utcnow


class Role(enum.StrEnum):
    """Staff roles, weakest first: each role can do everything the ones before it can."""

    VIEWER = "viewer"
    MARKETER = "marketer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in the hierarchy (viewer 0 … admin 2)."""
        return list(Role).index(self)

    def at_least(self, other: Role) -> bool:
        """Whether this role includes everything `other` may do."""
        return self.rank >= other.rank


class User(db.Model):
    """A staff member who signs in to the console."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.VIEWER.value)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    sessions: Mapped[list[StaffSession]] = relationship(back_populates="user", cascade="all, delete-orphan")

    # Flask-Login identifies a signed-in browser by its server-side session, not by the user id, so
    # deleting the session row ends it even for someone holding a copy of the cookie.
    current_session_id = None  # type: str | None (not a column)

    def set_password(self, password: str) -> None:
        """Hash and store a new password (scrypt)."""
        self.password_hash = generate_password_hash(password, method="scrypt")

    def check_password(self, password: str) -> bool:
        """Whether the password matches."""
        return check_password_hash(self.password_hash, password)

    @property
    def role_enum(self) -> Role:
        """The role as a Role."""
        return Role(self.role)

    def can(self, role: Role) -> bool:
        """Whether this user holds at least `role`."""
        return self.active and self.role_enum.at_least(role)

    # Flask-Login protocol
    @property
    def is_active(self) -> bool:
        """Deactivated users cannot sign in."""
        return self.active

    @property
    def is_authenticated(self) -> bool:
        """A loaded user is authenticated."""
        return True

    @property
    def is_anonymous(self) -> bool:
        """A loaded user is not anonymous."""
        return False

    def get_id(self) -> str | None:
        """The server-side session id stored in the cookie."""
        return self.current_session_id


class StaffSession(db.Model):
    """A signed-in browser; deleting the row signs that browser out."""

    __tablename__ = "staff_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))

    user: Mapped[User] = relationship(back_populates="sessions")


class LoginAttempt(db.Model):
    """A failed sign-in, counted per account and per client address for rate limiting."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_email_at", "email", "at"),
        Index("ix_login_attempts_address_at", "address", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
