"""The WSGI entry point for gunicorn: `gunicorn wsgi:app`."""

from webadmin import create_app

app = create_app()
