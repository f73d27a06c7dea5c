"""Demo data: a believable console on first run. Each section registers a loader here.

A load is a `DemoLoad` row: `start()` claims the single active slot (a second start while one is queued or running
is refused) and audits who asked; `run()` then runs the loaders, each in its own transaction, recording which one
is running (n of m) before it starts. A loader that fails is rolled back whole and the load stops there with its
error: what earlier loaders added stays (each is complete and idempotent), so loading again finishes the set.
The dashboard runs `run()` in a queue task; `flask demo load` runs it in the shell, both through `load()`'s parts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from webadmin.extensions import db
from webadmin.models.demo import DemoLoad
from webadmin.models.types import utcnow
from webadmin.models.user import User
from webadmin.services import ServiceError, audit

log = logging.getLogger(__name__)

# Loaders run in order; each returns a short phrase ("12,000 subscribers") for the report, and must be
# idempotent (loading twice adds nothing the second time). They do not commit: run() does, one loader at a time.
Loader = Callable[[], str | None]
LOADERS: list[tuple[str, Loader]] = []
# Counters for the dashboard summary: (label, function returning a count).
COUNTERS: list[tuple[str, Callable[[], int]]] = []
# A load that has shown no sign of life for this long is taken for dead (its worker stopped) when another starts.
STALE_AFTER = timedelta(minutes=30)
# Progress callback of run(): (step, steps, loader name, phrase or None; None before the loader runs).
Progress = Callable[[int, int, str, str | None], None]


class DemoLoadBusy(ServiceError):
    """Another demo load is queued or running."""

    def __init__(self, running: DemoLoad) -> None:
        when = running.created_at.strftime("%Y-%m-%d %H:%M UTC")
        super().__init__(f"A demo load is already {running.status} (started by {running.actor} at {when}); "
                         "nothing new was started.")
        self.running = running


def register_loader(name: str) -> Callable[[Loader], Loader]:
    """Decorator: add a demo loader under a name."""

    def decorator(loader: Loader) -> Loader:
        LOADERS.append((name, loader))
        return loader

    return decorator


def register_counter(label: str, counter: Callable[[], int]) -> None:
    """Add a count shown on the dashboard summary."""
    COUNTERS.append((label, counter))


def summary() -> list[tuple[str, int]]:
    """The dashboard's counters."""
    return [(label, counter()) for label, counter in COUNTERS]


def is_empty() -> bool:
    """Whether there is nothing but staff accounts yet (the dashboard then offers demo data)."""
    return all(count == 0 for _, count in summary())


def latest() -> DemoLoad | None:
    """The most recent demo load."""
    return db.session.scalar(select(DemoLoad).order_by(DemoLoad.id.desc()).limit(1))


def _selected(only: str | None) -> list[tuple[str, Loader]]:
    return [(name, loader) for name, loader in LOADERS if only is None or only == name]


def _release_stale() -> None:
    """Mark an active load that stopped showing signs of life as failed, freeing the slot."""
    db.session.execute(
        update(DemoLoad).where(DemoLoad.slot.is_not(None), DemoLoad.updated_at < utcnow() - STALE_AFTER).values(
            status="failed", slot=None, finished_at=utcnow(),
            error=f"No progress for {STALE_AFTER.seconds // 60} minutes: the worker running it stopped."))


def start(actor: User | str | None, only: str | None = None) -> DemoLoad:
    """Claim the single active slot for a new load and audit it (committed); DemoLoadBusy when one is active."""
    if only is not None and not _selected(only):
        raise ServiceError(f"Unknown demo loader {only!r}.", field="only")
    _release_stale()
    db.session.commit()
    load = DemoLoad(status="queued", slot=1, only=only, steps=len(_selected(only)),
                    actor_id=actor.id if isinstance(actor, User) else None,
                    actor=actor.email if isinstance(actor, User) else (actor or "system"))
    db.session.add(load)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        running = db.session.scalar(select(DemoLoad).where(DemoLoad.slot.is_not(None)))
        if running is None:  # it finished in between: the slot is free again
            return start(actor, only)
        raise DemoLoadBusy(running) from None
    audit.record("demo.load", actor=actor, obj=("demo_load", load.id), loaders=[n for n, _ in _selected(only)])
    db.session.commit()
    return load


def _mark(load_id: int, **values: object) -> None:
    """Update the load's row (in the current transaction) and show it is alive."""
    db.session.execute(update(DemoLoad).where(DemoLoad.id == load_id).values(updated_at=utcnow(), **values))


def fail(load_id: int, error: str) -> None:
    """Stop a load with an error (it then frees the slot); committed."""
    db.session.rollback()
    _mark(load_id, status="failed", slot=None, error=error[:2000], finished_at=utcnow())
    db.session.commit()


def run(load_id: int, progress: Progress | None = None) -> DemoLoad:
    """Run a started load's loaders, each in its own transaction; returns the finished row (done or failed).

    A load that is not queued (run already, say by a duplicate task) is returned as it is."""
    load = db.session.get(DemoLoad, load_id)
    if load is None or load.status != "queued":
        return load
    selected = _selected(load.only)
    _mark(load_id, status="running", started_at=utcnow(), steps=len(selected))
    db.session.commit()
    parts = []
    for step, (name, loader) in enumerate(selected, start=1):
        _mark(load_id, loader=name, step=step)
        db.session.commit()  # the progress is visible before the loader's own (long) transaction
        if progress:
            progress(step, len(selected), name, None)
        try:
            phrase = loader()
            db.session.commit()
        except Exception as exc:  # noqa: BLE001  (any failure ends the load with its message; logged in full)
            log.exception("demo load %s: loader %s failed", load_id, name)
            fail(load_id, f"{name}: {type(exc).__name__}: {exc}")
            return db.session.get(DemoLoad, load_id)
        if phrase is not None:
            parts.append(phrase)
        if progress:
            progress(step, len(selected), name, phrase)
    _mark(load_id, status="done", slot=None, loader=None, report=", ".join(parts) or "nothing new",
          finished_at=utcnow())
    db.session.commit()
    return db.session.get(DemoLoad, load_id)


def load(actor: User | str | None = "cli", only: str | None = None, progress: Progress | None = None) -> str:
    """Start and run a load here and now (the shell, tests); the report, or ServiceError with the failure."""
    finished = run(start(actor, only).id, progress)
    if finished.status != "done":
        raise ServiceError(f"Demo load failed: {finished.error}")
    return finished.report or "nothing new"
