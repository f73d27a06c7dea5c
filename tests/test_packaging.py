"""The README's deploy (`pip install .`): the wheel carries templates, static files and migrations, and an installed
copy finds them, migrates an empty database and serves the first-run page."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from webadmin.config import ROOT


def _checkout_files(folder: str) -> set[str]:
    """Files under a root folder of the checkout, as wheel paths under webadmin/_bundle/."""
    base = ROOT / folder
    return {
        f"webadmin/_bundle/{folder}/{path.relative_to(base).as_posix()}"
        for path in base.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` would build, built in-process with the project's backend (hatchling)."""
    from hatchling.build import build_wheel

    out = tmp_path_factory.mktemp("dist")
    cwd = os.getcwd()
    os.chdir(ROOT)  # a PEP 517 backend builds the project in the working directory
    try:
        name = build_wheel(str(out))
    finally:
        os.chdir(cwd)
    return out / name


def test_wheel_carries_templates_static_and_migrations(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("templates", "static", "migrations"):
        expected = _checkout_files(folder)
        assert expected and expected <= names, f"{folder}/ missing from the wheel: {sorted(expected - names)[:5]}"
    assert "webadmin/_bundle/static/vendor/htmx/htmx.min.js" in names  # `make assets` ran before the build
    assert "webadmin/_bundle/migrations/alembic.ini" in names and "webadmin/__init__.py" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "bench/", "instance/"))]


def test_installed_wheel_migrates_and_serves_the_first_run_page(wheel, tmp_path):
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    script = textwrap.dedent(
        """
        import flask_migrate, webadmin
        from webadmin import create_app
        app = create_app()
        assert webadmin.__file__.startswith(%(site)r), webadmin.__file__
        assert app.template_folder.startswith(%(site)r) and app.static_folder.startswith(%(site)r)
        with app.app_context():
            flask_migrate.upgrade()  # what `flask --app webadmin db upgrade` runs
        client = app.test_client()
        page = client.get("/setup")
        assert page.status_code == 200 and "Create the first admin account" in page.get_data(as_text=True)
        assert client.get("/static/vendor/htmx/htmx.min.js").status_code == 200
        from gunicorn.util import import_app
        assert import_app("webadmin:create_app()").template_folder == app.template_folder  # the README's line
        print(app.config["INSTANCE_PATH"])
        """
    ) % {"site": str(site)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBADMIN_", "FLASK_"))}
    env["PYTHONPATH"] = str(site)  # ahead of the checkout's editable install
    result = subprocess.run([sys.executable, "-c", script], cwd=deploy, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    # The instance (SQLite file, secret key) goes to the working directory, not into site-packages.
    assert result.stdout.strip().splitlines()[-1] == str(deploy / "instance")
    assert (deploy / "instance" / "webadmin.sqlite3").is_file()
