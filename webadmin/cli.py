"""`flask --app webadmin …` commands: users, demo, worker, serve."""

from __future__ import annotations

import signal

import click
from flask import Flask
from flask.cli import AppGroup

from webadmin.extensions import db
from webadmin.models.user import Role
from webadmin.services import ServiceError, accounts, demo

users_cli = AppGroup("users", help="Manage staff accounts.")
demo_cli = AppGroup("demo", help="Demo data.")
push_cli = AppGroup("push", help="Sending.")
channels_cli = AppGroup("channels", help="Provider channels.")
analytics_cli = AppGroup("analytics", help="Analytics rollups.")


@analytics_cli.command("rebuild")
def rebuild_rollups() -> None:
    """Recompute every analytics rollup from the message rows (after an upgrade, or to check the live counts)."""
    from webadmin.services.rollups import rebuild

    written = rebuild()
    click.echo("Rebuilt: " + ", ".join(f"{name} {count:,}" for name, count in written.items()) + ".")


@channels_cli.command("rotate-key")
def rotate_key() -> None:
    """Re-encrypt the credentials of every channel and the SMS channel under the first key of the settings.

    All or nothing: if any blob cannot be opened with the configured keys (the old key was dropped too soon),
    nothing is written and the channels concerned are named.
    """
    from sqlalchemy import select

    from webadmin.crypto import CredentialsKeyError, UnreadableCredentials, rotate
    from webadmin.models.campaign import Channel
    from webadmin.models.sms import SmsChannel

    channels = db.session.scalars(select(Channel).where(Channel.credentials_encrypted.is_not(None))).all()
    sms = db.session.scalars(select(SmsChannel).where(SmsChannel.credentials_encrypted.is_not(None))).all()
    rows = [(f"channel {c.id} ({c.name})", c) for c in channels]
    rows += [(f"SMS channel {s.id} ({s.backend})", s) for s in sms]
    rotated, unreadable = [], []
    for label, row in rows:
        try:
            rotated.append((row, rotate(row.credentials_encrypted)))
        except UnreadableCredentials:
            unreadable.append(label)
        except CredentialsKeyError as exc:
            raise click.ClickException(f"{exc}; nothing was re-encrypted.") from None
    if unreadable:
        raise click.ClickException(
            "No configured key opens the credentials of " + ", ".join(unreadable) + ". Put the key they were "
            "encrypted with back at the end of WEBADMIN_CREDENTIALS_KEYS and run this again; nothing was re-encrypted."
        )
    for row, blob in rotated:
        row.credentials_encrypted = blob
    db.session.commit()
    click.echo(f"Re-encrypted the credentials of {len(channels)} channel(s) and {len(sms)} SMS channel(s).")


@users_cli.command("create")
@click.option("--email", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.ADMIN.value, show_default=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="Asked when omitted.")
def create_user(email: str, role: str, password: str) -> None:
    """Create a staff account (the password is asked, never echoed)."""
    try:
        user = accounts.create_user(email, password, Role(role), actor="cli")
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        raise click.ClickException(exc.message) from exc
    click.echo(f"Created {user.email} ({user.role}).")


@demo_cli.command("load")
def load_demo() -> None:
    """Load demo data (idempotent: a second run adds nothing), with a line per loader as it runs."""
    import time

    started: dict[str, float] = {}

    def progress(step: int, steps: int, name: str, phrase: str | None) -> None:
        """Called before each loader and after it: a line per loader, begun when it starts."""
        if name not in started:
            started[name] = time.perf_counter()
            click.echo(f"[{step}/{steps}] {name} … ", nl=False)
            return
        click.echo(f"{phrase or 'nothing new'} ({time.perf_counter() - started[name]:.1f} s)")

    try:
        report = demo.load(actor="cli", progress=progress)
    except ServiceError as error:
        if started:
            click.echo("failed")
        raise click.ClickException(error.message) from None
    click.echo(f"Demo data loaded: {report}.")


@push_cli.command("send-batch")
def send_batch() -> None:
    """Send waiting and due-for-retry messages now, without a queue consumer (pymess send_messages_batch)."""
    from sqlalchemy import func, select

    from webadmin.models.campaign import Campaign, CampaignStatus
    from webadmin.models.message import PENDING_STATES, Message
    from webadmin.models.types import utcnow
    from webadmin.sending.engine import dispatch
    from webadmin.sending.sweeper import stalled_campaign_ids

    campaign_ids = stalled_campaign_ids()
    total = db.session.scalar(
        select(func.count(Message.id)).join(Campaign, Campaign.id == Message.campaign_id)
        .where(Campaign.status == CampaignStatus.SENDING.value, Message.state.in_(PENDING_STATES),
               (Message.next_attempt_at.is_(None)) | (Message.next_attempt_at <= utcnow()))
    ) or 0
    sent = failed = 0
    with click.progressbar(length=total, label=f"Sending {total:,} messages", show_pos=True) as bar:
        for campaign_id in campaign_ids:
            report = dispatch(campaign_id, on_batch=lambda o: bar.update(o.sent + o.failed + o.retried))
            sent, failed = sent + report.sent, failed + report.failed
    click.echo(f"Done: {sent:,} sent, {failed:,} failed, {len(campaign_ids)} campaign(s).")


@click.command("worker")
@click.option("--workers", default=4, show_default=True, help="Worker threads in this consumer.")
def worker(workers: int) -> None:
    """Run a queue consumer (any number can run, on any machine sharing the database and queue)."""
    from webadmin.queue import huey, queue_backend

    click.echo(f"webadmin worker: {workers} threads on the {queue_backend()} queue")
    huey.create_consumer(workers=workers, worker_type="thread", periodic=True).run()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: leave the web server's loop the way Ctrl-C does, so the consumer is stopped too."""
    raise KeyboardInterrupt


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--workers", default=2, show_default=True, help="In-process queue worker threads.")
def serve(host: str, port: int, workers: int) -> None:
    """Serve the console with an in-process queue consumer (the embedded default of `make run`)."""
    from flask import current_app
    from werkzeug.serving import run_simple

    from webadmin.queue import huey

    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=True)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    consumer.start()
    # Huey's start() installs handlers that only set flags for its own run() loop, which serve never runs: the
    # first Ctrl-C and every SIGTERM were swallowed. Take the signals back; both now end the web server.
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    signal.signal(signal.SIGTERM, _interrupt)
    click.echo(f"webadmin: http://{host}:{port}/ (in-process worker: {workers} threads)")
    try:
        # run_simple, not app.run: Flask refuses app.run under the `flask` command. It returns on KeyboardInterrupt.
        run_simple(host, port, current_app._get_current_object(), threaded=True)
    finally:
        consumer.stop(graceful=True)  # lets running tasks finish; a second Ctrl-C interrupts them
        click.echo("webadmin: stopped")


def register_cli(app: Flask) -> None:
    """Attach the command groups."""
    for command in (users_cli, demo_cli, push_cli, channels_cli, analytics_cli, worker, serve):
        app.cli.add_command(command)
