"""Configuration from the environment and `.env`: generated secret, default paths, clear errors on bad values."""

from __future__ import annotations

import importlib
import os
import re
import stat
import sys

import pytest

from webadmin import config
from webadmin.config import ROOT, load_config


@pytest.fixture
def env(monkeypatch, tmp_path) -> dict[str, str]:
    """A private copy of the environment without any webadmin setting, in an empty working directory.

    load_dotenv writes into os.environ; a copy keeps what a test loads from leaking into the next one.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WEBADMIN_", "FLASK_"))}
    monkeypatch.setattr(os, "environ", clean)
    monkeypatch.chdir(tmp_path)
    clean["WEBADMIN_INSTANCE_PATH"] = str(tmp_path / "instance")
    return clean


def test_secret_key_is_generated_once_and_reused(env, tmp_path):
    first = load_config()["SECRET_KEY"]
    key_file = tmp_path / "instance" / "secret_key"
    assert key_file.read_text().strip() == first and len(first) >= 40
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # only the service account may read it
    assert load_config()["SECRET_KEY"] == first  # a restart keeps every session and CSRF token valid
    env["WEBADMIN_INSTANCE_PATH"] = str(tmp_path / "other")
    assert load_config()["SECRET_KEY"] != first  # generated, not a built-in default
    env["WEBADMIN_SECRET_KEY"] = "from the environment"
    assert load_config()["SECRET_KEY"] == "from the environment"
    assert key_file.read_text().strip() == first


def test_default_database_is_a_sqlite_file_in_the_instance_folder(env, tmp_path):
    settings = load_config()
    assert settings["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'instance' / 'webadmin.sqlite3'}"
    assert settings["INSTANCE_PATH"] == str(tmp_path / "instance") and (tmp_path / "instance").is_dir()
    assert settings["REDIS_URL"] is None and settings["PROXY_HOPS"] == 0
    env["WEBADMIN_DATABASE_URL"] = "postgres://u@db/webadmin"
    assert load_config()["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@db/webadmin"


def test_instance_folder_defaults_to_the_checkout_or_the_working_directory(env, tmp_path, monkeypatch):
    assert config.default_instance_path() == ROOT / "instance"  # this checkout, wherever the command runs
    assert config.resource_folder("templates") == ROOT / "templates"
    bundle = tmp_path / "site-packages" / "webadmin" / "_bundle"
    (bundle / "templates").mkdir(parents=True)
    monkeypatch.setattr(config, "BUNDLE", bundle)  # as in an installed wheel
    assert config.default_instance_path() == tmp_path / "instance"  # not inside site-packages
    assert config.resource_folder("templates") == bundle / "templates"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WEBADMIN_SESSION_HOURS", "twelve", "WEBADMIN_SESSION_HOURS must be a whole number, not 'twelve'"),
        ("WEBADMIN_LOGIN_MAX_FAILURES_ACCOUNT", "0", "WEBADMIN_LOGIN_MAX_FAILURES_ACCOUNT must be at least 1, not 0"),
        ("WEBADMIN_PROXY_HOPS", "-1", "WEBADMIN_PROXY_HOPS must be at least 0, not -1"),
        ("WEBADMIN_PROXY_HOPS", "1.5", "WEBADMIN_PROXY_HOPS must be a whole number, not '1.5'"),
        ("WEBADMIN_ENGINE_LEASE_SECONDS", "soon", "WEBADMIN_ENGINE_LEASE_SECONDS must be a number, not 'soon'"),
        ("WEBADMIN_DEFAULT_TIME_ZONE", "Mars/Olympus",
         "WEBADMIN_DEFAULT_TIME_ZONE must be an IANA time zone such as Europe/Warsaw, not 'Mars/Olympus'"),
    ],
)
def test_bad_values_fail_with_a_clear_message(env, name, value, message):
    env[name] = value
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        load_config()


def test_dotenv_is_honoured_without_overriding_the_environment(env, tmp_path):
    (tmp_path / ".env").write_text(
        "WEBADMIN_SESSION_HOURS=7\n"
        "WEBADMIN_LOGIN_WINDOW_MINUTES=3\n"
        "WEBADMIN_PROXY_HOPS=1\n"
        f"WEBADMIN_DATABASE_URL=sqlite:///{tmp_path / 'from-dotenv.sqlite3'}\n"
    )
    env["WEBADMIN_LOGIN_WINDOW_MINUTES"] = "9"  # a real variable beats the file
    (tmp_path / "deploy").mkdir()
    os.chdir(tmp_path / "deploy")  # found from a folder below too, as the flask command finds it
    settings = load_config()
    assert settings["SESSION_HOURS"] == 7 and settings["PROXY_HOPS"] == 1
    assert settings["LOGIN_WINDOW_MINUTES"] == 9
    assert settings["SQLALCHEMY_DATABASE_URI"].endswith("from-dotenv.sqlite3")


def test_dotenv_is_skipped_like_the_flask_command_skips_it(env, tmp_path):
    (tmp_path / ".env").write_text("WEBADMIN_SESSION_HOURS=7\n")
    env["FLASK_SKIP_DOTENV"] = "1"
    assert load_config()["SESSION_HOURS"] == 12


def test_gunicorn_entry_point_reads_dotenv(env, tmp_path, monkeypatch):
    """wsgi.py builds the app with create_app(), which is where .env used to be missed under gunicorn."""
    (tmp_path / ".env").write_text("WEBADMIN_SESSION_HOURS=5\nWEBADMIN_SECRET_KEY=from-dotenv-file\n")
    monkeypatch.delitem(sys.modules, "wsgi", raising=False)
    application = importlib.import_module("wsgi").app
    assert application.config["SESSION_HOURS"] == 5
    assert application.config["SECRET_KEY"] == "from-dotenv-file"
