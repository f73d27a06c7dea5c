"""Demo data: a believable console on first run. Each section registers a loader here."""

from __future__ import annotations

from collections.abc import Callable

from webadmin.extensions import db
from webadmin.models.user import User
from webadmin.services import audit

# Loaders run in order; each returns a short phrase ("12,000 subscribers") for the report, and must be
# idempotent (loading twice adds nothing the second time).
Loader = Callable[[], str | None]
LOADERS: list[tuple[str, Loader]] = []
# Counters for the dashboard summary: (label, function returning a count).
COUNTERS: list[tuple[str, Callable[[], int]]] = []


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


def load(actor: User | str | None = "cli", only: str | None = None) -> str:
    """Run every loader (or one), commit, and describe what was added."""
    parts = []
    for name, loader in LOADERS:
        if only is None or only == name:
            if (phrase := loader()) is not None:
                parts.append(phrase)
    audit.record("demo.load", actor=actor, loaders=[name for name, _ in LOADERS])
    db.session.commit()
    return ", ".join(parts) or "nothing new"

