"""Playwright driving Debian's Chromium against the app served on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServer, build_app
from tests.environment import chromium_path, need
from webadmin.extensions import db

ARTIFACTS = Path(os.environ.get("WEBADMIN_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
# Chromium flags for a closed network: no background calls home, no sandbox as root in CI.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """One headless Chromium for the session."""
    path = chromium_path()
    need(path is not None, "Chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def live_app(tmp_path, monkeypatch):
    """The app on a fresh SQLite file (browser tests exercise the UI, not the database backend)."""
    monkeypatch.setenv("WEBADMIN_INSTANCE_PATH", str(tmp_path / "instance"))
    app = build_app(f"sqlite:///{tmp_path / 'browser.sqlite3'}", tmp_path, WTF_CSRF_ENABLED=True)
    with app.app_context():
        db.create_all()
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def live_server(live_app) -> Iterator[LiveServer]:
    """The app served over HTTP on 127.0.0.1."""
    with LiveServer(live_app) as server:
        yield server


# htmx logs a poll aborted by navigating away as an error; that is not a fault (failed requests are caught
# by the response and requestfailed listeners instead).
BENIGN = ("htmx:sendAbort", "htmx:afterRequest")


def _console_error(page, msg) -> None:
    """Collect console errors that signal a fault."""
    if msg.type == "error" and not msg.text.startswith(BENIGN):
        page.console_errors.append(msg.text)


@pytest.fixture
def page(browser, live_server):
    """A fresh browser context and page; console errors are collected on page.console_errors."""
    context = browser.new_context(base_url=live_server.url)
    new_page = context.new_page()
    new_page.console_errors = []
    new_page.on("console", lambda msg: _console_error(new_page, msg))
    new_page.on("requestfailed", lambda r: "ERR_ABORTED" not in (r.failure or "")
                and new_page.console_errors.append(f"failed {r.url}: {r.failure}"))
    new_page.on("pageerror", lambda exc: new_page.console_errors.append(str(exc)))
    new_page.on("response", lambda r: r.status >= 400 and new_page.console_errors.append(f"{r.status} {r.url}"))
    yield new_page
    context.close()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots are kept for CI to show."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
