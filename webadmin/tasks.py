"""Queue entry points. Thin: they take ids and call the engine or services inside the app context."""

from __future__ import annotations

import logging
import math

from flask import current_app
from huey import crontab

from webadmin.queue import huey, in_app_context

log = logging.getLogger(__name__)


@huey.task()
@in_app_context
def dispatch_campaign(campaign_id: int) -> str:
    """Send a campaign's pending messages until none are claimable."""
    from webadmin.sending.engine import dispatch

    report = dispatch(campaign_id)
    log.info("campaign %s: %s batches, %s sent (%s possibly re-sent), %s failed, %s retried, %s lost leases; %s",
             campaign_id, report.batches, report.sent, report.possibly_resent, report.failed, report.retried,
             report.lost_lease, report.stopped_because)
    return report.stopped_because


@huey.task()
@in_app_context
def start_scheduled(campaign_id: int) -> str:
    """Start a scheduled campaign at its time (or hold it if it is too late; `failed` if it cannot start)."""
    from webadmin.sending.sweeper import start_due

    return start_due(campaign_id)


def enqueue_dispatch(campaign_id: int, pending: int) -> int:
    """Fan a campaign out to several dispatch tasks so several workers share it; returns how many."""
    batch = current_app.config.get("ENGINE_BATCH_SIZE", 1000)
    fanout = current_app.config.get("ENGINE_DISPATCH_FANOUT", 4)
    tasks = max(1, min(fanout, math.ceil(pending / batch)))
    for _ in range(tasks):
        dispatch_campaign(campaign_id)
    return tasks


@huey.periodic_task(crontab(minute="*"))
@in_app_context
def sweep() -> dict[str, int]:
    """Every minute: start due scheduled campaigns and re-enqueue work a dead worker left behind."""
    from webadmin.sending.sweeper import sweep_once

    return sweep_once()


@huey.periodic_task(crontab(minute="*"))
@in_app_context
def sms_fallback() -> dict[str, int]:
    """Every minute (and at the end of short windows): make due SMS fallback rows and queue their sending."""
    from webadmin.sms.fallback import tick

    return tick()


@huey.task()
@in_app_context
def load_demo_data(load_id: int) -> str:
    """Run a demo load the dashboard started (its progress and outcome are in its `demo_loads` row)."""
    from webadmin.services import demo

    finished = demo.run(load_id)
    return finished.status if finished is not None else "missing"


@huey.task()
@in_app_context
def send_sms_fallbacks() -> str:
    """Send claimable SMS fallback rows until none is left or the SMS channel halts."""
    from webadmin.sms.fallback import send_pending

    report = send_pending()
    log.info("SMS fallback: %s batches, %s sent, %s skipped, %s failed, %s retried; %s", report.batches,
             report.sent, report.skipped, report.failed, report.retried, report.stopped_because)
    return report.stopped_because
