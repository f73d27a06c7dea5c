"""`flask serve` (what `make run` runs): one Ctrl-C or one SIGTERM stops the web server and the queue consumer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import build_app
from webadmin.extensions import db


def _free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen, seconds: float = 90) -> int:
    """Poll until the server answers (the status code), failing early if the process died."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # follows / -> /setup
                return response.status
        except (urllib.error.URLError, ConnectionError, TimeoutError):  # not listening yet, or a slow first page
            time.sleep(0.1)
    pytest.fail("flask serve did not answer")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_one_signal_stops_server_and_consumer(tmp_path, signum):
    database = f"sqlite:///{tmp_path / 'serve.sqlite3'}"
    app = build_app(database, tmp_path)
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBADMIN_", "FLASK_"))}
    env.update(WEBADMIN_DATABASE_URL=database, WEBADMIN_INSTANCE_PATH=str(tmp_path / "instance"),
               WEBADMIN_SECRET_KEY="serve-test", FLASK_SKIP_DOTENV="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "webadmin", "serve", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert _wait_until_serving(f"http://127.0.0.1:{port}/", process) == 200
        process.send_signal(signum)
        out, err = process.communicate(timeout=10)  # before the fix: ignored, and this timed out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-2000:]
    assert "webadmin: stopped" in out and "Traceback" not in err
