"""Staff accounts: first-run admin, sign-in with rate limits, server-side sessions, user management."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from webadmin.extensions import db
from webadmin.models.types import utcnow
from webadmin.models.user import LoginAttempt, Role, StaffSession, User
from webadmin.services import ServiceError, audit

MIN_PASSWORD_LENGTH = 12
PASSWORD_RULE = f"Use at least {MIN_PASSWORD_LENGTH} characters for the password."


@dataclass(frozen=True)
class LoginLimits:
    """Failed sign-in limits per account and per client address within a window."""

    per_account: int = 5
    per_address: int = 20
    window: timedelta = timedelta(minutes=15)


def normalize_email(email: str) -> str:
    """Emails compare case-insensitively and without surrounding blanks."""
    return email.strip().lower()


def validate_password(password: str) -> None:
    """Refuse passwords that are too short."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ServiceError(PASSWORD_RULE, field="password")


def has_users() -> bool:
    """Whether any staff account exists (false only on a brand-new install)."""
    return db.session.scalar(select(func.count(User.id))) > 0


def find_user(email: str) -> User | None:
    """The account with this email, if any."""
    return db.session.scalar(select(User).where(User.email == normalize_email(email)))


def create_user(email: str, password: str, role: Role, *, actor: User | str | None) -> User:
    """Create a staff account; refuses duplicates and weak passwords."""
    email = normalize_email(email)
    if "@" not in email or len(email) > 254:
        raise ServiceError("Enter a valid email address.", field="email")
    if find_user(email) is not None:
        raise ServiceError("An account with this email already exists.", field="email", code="conflict")
    validate_password(password)
    user = User(email=email, role=Role(role).value, active=True)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    audit.record("user.create", actor=actor, obj=("user", user.id), email=email, role=user.role)
    return user


def _lock_users_for_first_run() -> None:
    """Hold the users table's write lock until commit, so the check-then-insert of the first run is atomic.

    Without it two first-run submissions with different emails both counted no users and both made an admin
    (the unique email only stops identical ones). PostgreSQL: a self-conflicting table lock that still lets
    readers through. SQLite: BEGIN IMMEDIATE takes the single writer lock before the count is read.
    """
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
    elif connection.dialect.name == "sqlite" and not connection.connection.dbapi_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # a transaction that already wrote holds the lock


def create_first_admin(email: str, password: str) -> User:
    """Create the first admin on an empty install; refused once any account exists, even by a racing request."""
    _lock_users_for_first_run()
    if has_users():
        raise ServiceError("webadmin is already set up; sign in instead.", code="conflict")
    user = create_user(email, password, Role.ADMIN, actor="first-run")
    db.session.commit()
    return user


def _failures_since(column, value: str, since: datetime) -> tuple[int, datetime | None]:
    """Count failed attempts for one key since a time, with the oldest attempt's time."""
    row = db.session.execute(
        select(func.count(LoginAttempt.id), func.min(LoginAttempt.at)).where(
            column == value, LoginAttempt.at >= since
        )
    ).one()
    return row[0], row[1]


def _retry_minutes(oldest: datetime | None, window: timedelta) -> int:
    """Minutes until the oldest failure in the window expires."""
    if oldest is None:
        return math.ceil(window.total_seconds() / 60)
    oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=utcnow().tzinfo)
    remaining = (oldest + window - utcnow()).total_seconds()
    return max(1, math.ceil(remaining / 60))


def check_login_allowed(email: str, address: str, limits: LoginLimits) -> None:
    """Raise a clear error when this account or address has failed too often recently."""
    since = utcnow() - limits.window
    count, oldest = _failures_since(LoginAttempt.email, normalize_email(email), since)
    if count >= limits.per_account:
        minutes = _retry_minutes(oldest, limits.window)
        raise ServiceError(
            f"Too many failed sign-ins for this account. Try again in {minutes} minute(s).",
            code="rate_limited",
        )
    count, oldest = _failures_since(LoginAttempt.address, address, since)
    if count >= limits.per_address:
        minutes = _retry_minutes(oldest, limits.window)
        raise ServiceError(
            f"Too many failed sign-ins from your address. Try again in {minutes} minute(s).",
            code="rate_limited",
        )


def authenticate(email: str, password: str, address: str, limits: LoginLimits) -> User:
    """Check credentials under the rate limits; record failures; return the user on success."""
    check_login_allowed(email, address, limits)
    user = find_user(email)
    if user is None or not user.check_password(password) or not user.active:
        db.session.add(LoginAttempt(email=normalize_email(email), address=address))
        audit.record("auth.login_failed", actor=normalize_email(email)[:254], address=address)
        db.session.commit()
        raise ServiceError("Wrong email or password, or the account is deactivated.", code="unauthorized")
    db.session.execute(delete(LoginAttempt).where(LoginAttempt.email == user.email))
    return user


def start_session(user: User, *, hours: int, address: str | None, user_agent: str | None) -> StaffSession:
    """Open a server-side session for a signed-in browser."""
    now = utcnow()
    session = StaffSession(
        id=secrets.token_urlsafe(32),
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=hours),
        address=address,
        user_agent=(user_agent or "")[:255],
    )
    db.session.add(session)
    user.last_login_at = now
    user.current_session_id = session.id
    audit.record("auth.login", actor=user, address=address)
    db.session.commit()
    return session


def load_session_user(session_id: str) -> User | None:
    """The active user behind a live session id, or None when it ended, expired or was revoked."""
    staff_session = db.session.get(StaffSession, session_id)
    if staff_session is None or staff_session.expires_at <= utcnow():
        return None
    user = staff_session.user
    if not user.active:
        return None
    user.current_session_id = staff_session.id
    return user


def end_session(session_id: str | None, *, actor: User | None, address: str | None = None) -> None:
    """Delete a server-side session (sign-out)."""
    if session_id:
        db.session.execute(delete(StaffSession).where(StaffSession.id == session_id))
    if actor is not None:
        audit.record("auth.logout", actor=actor, address=address)
    db.session.commit()


def _active_admins() -> int:
    """How many active admins exist."""
    return db.session.scalar(
        select(func.count(User.id)).where(User.role == Role.ADMIN.value, User.active.is_(True))
    )


def _guard_last_admin(user: User) -> None:
    """Refuse a change that would leave no active admin."""
    if user.role == Role.ADMIN.value and user.active and _active_admins() <= 1:
        raise ServiceError("This is the last active admin; make someone else admin first.")


def change_role(user: User, role: Role, *, actor: User) -> None:
    """Give a user another role."""
    role = Role(role)
    if role.value == user.role:
        return
    if role != Role.ADMIN:
        _guard_last_admin(user)
    old = user.role
    user.role = role.value
    audit.record("user.role", actor=actor, obj=("user", user.id), email=user.email, old=old, new=role.value)
    db.session.commit()


def set_active(user: User, active: bool, *, actor: User) -> None:
    """Deactivate (ending every session of the user at once) or reactivate an account."""
    if user.active == active:
        return
    if not active:
        if user.id == actor.id:
            raise ServiceError("You cannot deactivate your own account.")
        _guard_last_admin(user)
        db.session.execute(delete(StaffSession).where(StaffSession.user_id == user.id))
    user.active = active
    action = "user.activate" if active else "user.deactivate"
    audit.record(action, actor=actor, obj=("user", user.id), email=user.email)
    db.session.commit()


def reset_password(user: User, password: str, *, actor: User) -> None:
    """Set a new password and sign the user out everywhere."""
    validate_password(password)
    user.set_password(password)
    db.session.execute(delete(StaffSession).where(StaffSession.user_id == user.id))
    audit.record("user.password_reset", actor=actor, obj=("user", user.id), email=user.email)
    db.session.commit()
