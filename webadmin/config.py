"""Settings from the environment (and an optional .env), with safe embedded defaults."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
# An installed wheel carries templates/, static/ and migrations/ inside the package (see pyproject.toml,
# [tool.hatch.build.targets.wheel.force-include]); a checkout keeps them at its root.
BUNDLE = PACKAGE / "_bundle"

# Every setting: (environment variable, default, description). The README's table is made from this list
# (tests/test_docs.py checks that it stays complete).
SETTINGS: list[tuple[str, str, str]] = [
    ("WEBADMIN_DATABASE_URL", "sqlite:///<instance>/webadmin.sqlite3", "SQLAlchemy database URL"),
    ("WEBADMIN_SECRET_KEY", "generated once into <instance>/secret_key", "signs sessions and CSRF tokens"),
    ("WEBADMIN_INSTANCE_PATH", "<checkout>/instance (installed: ./instance)",
     "folder for the SQLite files, the secret key and the queue"),
    ("WEBADMIN_REDIS_URL", "(unset: SQLite queue under instance/)", "Redis URL for the task queue"),
    ("WEBADMIN_SESSION_HOURS", "12", "how long a console sign-in lasts"),
    ("WEBADMIN_LOGIN_MAX_FAILURES_ACCOUNT", "5", "failed sign-ins per account before a pause"),
    ("WEBADMIN_LOGIN_MAX_FAILURES_ADDRESS", "20", "failed sign-ins per client address before a pause"),
    ("WEBADMIN_LOGIN_WINDOW_MINUTES", "15", "window (and pause) for the sign-in limits"),
    ("WEBADMIN_SECURE_COOKIES", "false", "mark cookies Secure (set true behind HTTPS)"),
    ("WEBADMIN_PROXY_HOPS", "0", "proxies in front that set X-Forwarded-For/-Proto/-Host (trusted that many deep)"),
    ("WEBADMIN_LOG_LEVEL", "INFO", "log level"),
    ("WEBADMIN_CREDENTIALS_KEYS", "generated once into <instance>/credentials_key",
     "Fernet keys for channel credentials, newest first, comma-separated (rotation)"),
    ("WEBADMIN_ENGINE_BATCH_SIZE", "1000", "messages a worker claims per batch"),
    ("WEBADMIN_ENGINE_LEASE_SECONDS", "60", "a claimed batch's lease (renewed while it is sent)"),
    ("WEBADMIN_ENGINE_MAX_ATTEMPTS", "5", "send attempts before a message is ERROR"),
    ("WEBADMIN_ENGINE_MAX_AGE_HOURS", "24", "age after which a failing message is not retried"),
    ("WEBADMIN_ENGINE_RETRY_BASE_SECONDS", "30", "first retry delay (doubles per attempt, with jitter)"),
    ("WEBADMIN_ENGINE_DISPATCH_FANOUT", "4", "dispatch tasks queued per campaign (workers sharing it)"),
    ("WEBADMIN_SCHEDULE_MISSED_WINDOW_MINUTES", "15", "a scheduled campaign later than this is held, not sent"),
    ("WEBADMIN_SMS_BATCH_SIZE", "100", "SMS fallback rows a worker claims per batch"),
    ("WEBADMIN_DEFAULT_TIME_ZONE", "UTC", "zone for analytics times when the browser does not report one"),
]


def _env_bool(name: str, default: bool) -> bool:
    """Read a boolean environment variable ("1", "true", "yes", "on")."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int, minimum: int | None = None) -> int:
    """Read an integer environment variable, failing loudly on garbage or a value below `minimum`."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a whole number, not {value!r}") from exc
    if minimum is not None and number < minimum:
        raise RuntimeError(f"{name} must be at least {minimum}, not {number}")
    return number


def resource_folder(name: str) -> Path:
    """`templates`, `static` or `migrations`: the copy inside an installed wheel, else the checkout's root folder."""
    bundled = BUNDLE / name
    return bundled if bundled.is_dir() else ROOT / name


def default_instance_path() -> Path:
    """`instance/` in the checkout; for an installed wheel `./instance` (not inside site-packages)."""
    return Path.cwd() / "instance" if BUNDLE.is_dir() else ROOT / "instance"


def instance_path() -> Path:
    """The instance folder (SQLite database, secret key, queue), created on demand."""
    path = Path(os.environ.get("WEBADMIN_INSTANCE_PATH") or default_instance_path()).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_dotenv_file() -> None:
    """Read `.env` from the working directory (or a folder above it) into the environment, as the `flask`
    command does, so gunicorn and workers see the same settings; variables already set win, and
    FLASK_SKIP_DOTENV=1 turns it off."""
    from dotenv import find_dotenv, load_dotenv
    from flask.helpers import get_load_dotenv

    if get_load_dotenv() and (path := find_dotenv(usecwd=True)):
        load_dotenv(path, override=False, encoding="utf-8")


def _secret_key(instance: Path) -> str:
    """The secret key from the environment, or one generated once and kept in the instance folder."""
    if key := os.environ.get("WEBADMIN_SECRET_KEY"):
        return key
    key_file = instance / "secret_key"
    if not key_file.exists():
        # O_EXCL: two processes starting at once must not write two different keys.
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return key_file.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return key_file.read_text().strip()


def load_config() -> dict[str, Any]:
    """Build the Flask config mapping from the environment (and `.env`)."""
    load_dotenv_file()
    instance = instance_path()
    database_url = os.environ.get("WEBADMIN_DATABASE_URL") or f"sqlite:///{instance / 'webadmin.sqlite3'}"
    secure = _env_bool("WEBADMIN_SECURE_COOKIES", False)
    return {
        "INSTANCE_PATH": str(instance),
        "SECRET_KEY": _secret_key(instance),
        "SQLALCHEMY_DATABASE_URI": normalize_database_url(database_url),
        "REDIS_URL": os.environ.get("WEBADMIN_REDIS_URL") or None,
        "SESSION_HOURS": _env_int("WEBADMIN_SESSION_HOURS", 12, minimum=1),
        "LOGIN_MAX_FAILURES_ACCOUNT": _env_int("WEBADMIN_LOGIN_MAX_FAILURES_ACCOUNT", 5, minimum=1),
        "LOGIN_MAX_FAILURES_ADDRESS": _env_int("WEBADMIN_LOGIN_MAX_FAILURES_ADDRESS", 20, minimum=1),
        "LOGIN_WINDOW_MINUTES": _env_int("WEBADMIN_LOGIN_WINDOW_MINUTES", 15, minimum=1),
        "PROXY_HOPS": _env_int("WEBADMIN_PROXY_HOPS", 0, minimum=0),
        "LOG_LEVEL": os.environ.get("WEBADMIN_LOG_LEVEL", "INFO"),
        "SESSION_COOKIE_SECURE": secure,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": secure,
        "BOOTSTRAP_SERVE_LOCAL": True,
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session
        "MAX_CONTENT_LENGTH": 64 * 1024 * 1024,
        "CREDENTIALS_KEYS": os.environ.get("WEBADMIN_CREDENTIALS_KEYS") or None,
        "DEFAULT_TIME_ZONE": _time_zone("WEBADMIN_DEFAULT_TIME_ZONE", "UTC"),
        **_engine_settings(),
    }


def _time_zone(name: str, default: str) -> str:
    """An IANA time zone name from the environment, failing loudly on an unknown one."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    value = (os.environ.get(name) or "").strip() or default
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise RuntimeError(f"{name} must be an IANA time zone such as Europe/Warsaw, not {value!r}") from exc
    return value


def _env_float(name: str, default: float) -> float:
    """Read a number from the environment, failing loudly on garbage."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a number, not {value!r}") from exc


def _engine_settings() -> dict[str, Any]:
    """Delivery engine tunables (workers read them too, so they come from the environment)."""
    return {
        "ENGINE_BATCH_SIZE": _env_int("WEBADMIN_ENGINE_BATCH_SIZE", 1000, minimum=1),
        "ENGINE_LEASE_SECONDS": _env_float("WEBADMIN_ENGINE_LEASE_SECONDS", 60.0),
        "ENGINE_MAX_ATTEMPTS": _env_int("WEBADMIN_ENGINE_MAX_ATTEMPTS", 5, minimum=1),
        "ENGINE_MAX_AGE_HOURS": _env_float("WEBADMIN_ENGINE_MAX_AGE_HOURS", 24.0),
        "ENGINE_RETRY_BASE_SECONDS": _env_float("WEBADMIN_ENGINE_RETRY_BASE_SECONDS", 30.0),
        "ENGINE_DISPATCH_FANOUT": _env_int("WEBADMIN_ENGINE_DISPATCH_FANOUT", 4, minimum=1),
        "SCHEDULE_MISSED_WINDOW_MINUTES": _env_int("WEBADMIN_SCHEDULE_MISSED_WINDOW_MINUTES", 15, minimum=0),
        "SMS_BATCH_SIZE": _env_int("WEBADMIN_SMS_BATCH_SIZE", 100, minimum=1),
    }


def normalize_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs given in the common short forms."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
