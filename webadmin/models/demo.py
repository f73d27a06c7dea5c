"""Demo loads: the one running (or last) `demo load` started from the dashboard or the shell, and its progress.

In the database, not in a process: the web server may run several processes, and the load runs in a queue worker.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from webadmin.extensions import db
from webadmin.models.types import UTCDateTime, utcnow

DEMO_LOAD_STATES = ("queued", "running", "done", "failed")


class DemoLoad(db.Model):
    """One demo load. `slot` is 1 while it is queued or running and NULL after: its unique constraint lets only one
    load be active at a time, however many processes try to start one at once."""

    __tablename__ = "demo_loads"

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # DEMO_LOAD_STATES
    slot: Mapped[int | None] = mapped_column(Integer, unique=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(254))
    only: Mapped[str | None] = mapped_column(String(32))  # one loader by name, or all
    loader: Mapped[str | None] = mapped_column(String(32))  # the one running (or that failed)
    step: Mapped[int] = mapped_column(Integer, default=0)  # loaders started, the running one included
    steps: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # the last sign of life

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.status in ("queued", "running")
