"""Fixtures: app (on SQLite, and on PostgreSQL when configured), client, login-as-role, live server, a fake
Google service account."""

from __future__ import annotations

import contextvars
import os
import re
import threading
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from tests.environment import need, postgres_url
from tests.factories import PASSWORD, make_user
from webadmin import create_app, driver_sql
from webadmin.extensions import db
from webadmin.models.user import Role, User

BACKENDS = ["sqlite", "postgresql"]
# A developer's .env (say, one naming their own database) must not reach the suite or the processes it starts;
# tests/test_config.py exercises .env loading on a clean environment of its own.
os.environ["FLASK_SKIP_DOTENV"] = "1"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the browser tests last, and together on one worker when the suite runs under pytest-xdist.

    Playwright's sync API leaves its event loop registered as the thread's running loop between calls
    (it sets it again after each one), so any later ``asyncio.run`` in the main thread would refuse to
    start. Ordering the browser tests at the end keeps every other test independent of that state; under
    ``--dist loadgroup --no-loadscope-reorder`` (the Makefile's) their group is the last unit handed out,
    so the worker that runs it runs nothing after it. Tryfirst: xdist reads the group marks in this hook.
    """
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.xdist_group("browser"))


def _reset_postgres_schema(url: str) -> None:
    """Start the PostgreSQL test database from an empty public schema (once per test session)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_schema() -> str | None:
    """Create the tables once per session on PostgreSQL; tests then truncate after themselves."""
    url = postgres_url()
    if url is None:
        return None
    from webadmin.config import normalize_database_url

    url = normalize_database_url(url)
    _reset_postgres_schema(url)
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "QUEUE_IMMEDIATE": True})
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path, postgres_schema) -> str:
    """A fresh database: a new SQLite file, or the truncated PostgreSQL test database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite3'}"
    need(postgres_schema is not None, "PostgreSQL not configured (set WEBADMIN_TEST_DATABASE_URL)")
    return postgres_schema


def _truncate_all() -> None:
    """Empty every table on PostgreSQL between tests (fast compared with re-creating them)."""
    names = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


class IsolatedClient(FlaskClient):
    """Each request runs in its own app context (own `g`, own db session), as in production.

    Tests hold an app context open for direct database access; without this, Flask would reuse it for
    requests and share `g` (Flask-Login's cached user) and the SQLAlchemy session between requests.
    """

    def open(self, *args, **kwargs):
        """Run the request in an empty context so Flask pushes a fresh app context."""
        return contextvars.Context().run(super().open, *args, **kwargs)


def build_app(database_url: str, tmp_path, **overrides) -> Flask:
    """An app for tests on the given database, with its own instance folder."""
    config = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "INSTANCE_PATH": str(tmp_path),
        "SECRET_KEY": "test-secret",
        "WTF_CSRF_ENABLED": False,
        "QUEUE_IMMEDIATE": True,
        "SERVER_NAME": None,
    }
    config.update(overrides)
    application = create_app(config)
    application.test_client_class = IsolatedClient
    return application


@pytest.fixture
def app(database_url: str, tmp_path, monkeypatch) -> Iterator[Flask]:
    """The application bound to a fresh database."""
    monkeypatch.setenv("WEBADMIN_INSTANCE_PATH", str(tmp_path / "instance"))
    application = build_app(database_url, tmp_path)
    with application.app_context():
        if db.engine.dialect.name == "sqlite":
            db.create_all()
        yield application
        driver_sql.release()  # services called outside a request keep it until the context ends
        db.session.remove()
        if db.engine.dialect.name == "postgresql":
            _truncate_all()
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    """A CLI runner."""
    return app.test_cli_runner()


class AuthActions:
    """Sign in and out through the real forms."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def login(self, email: str, password: str = PASSWORD, **extra):
        """Post the sign-in form."""
        return self.client.post("/login", data={"email": email, "password": password, **extra})

    def logout(self):
        """Post the sign-out form."""
        return self.client.post("/logout")


@pytest.fixture
def auth(client: FlaskClient) -> AuthActions:
    """Sign-in helper bound to the client."""
    return AuthActions(client)


@pytest.fixture
def login_as(client: FlaskClient, auth: AuthActions) -> Callable[[Role | str], User]:
    """Create an account of a role and sign the client in as it."""

    def _login(role: Role | str) -> User:
        user = make_user(role)
        response = auth.login(user.email)
        assert response.status_code == 302, response.get_data(as_text=True)
        return user

    return _login


class LiveServer:
    """The app served by a real HTTP server in a thread (for the browser)."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


def csrf_token_from(html: str) -> str:
    """Pull a CSRF token out of a rendered form."""
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'"X-CSRFToken": "([^"]+)"', html
    )
    assert match, "no CSRF token in the page"
    return match.group(1)


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
