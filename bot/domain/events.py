"""Alert events: what the poller finds and the notifier posts.

An event's identity is (org, job id, kind, finished_at): a job that is re-run and fails
again alerts again, and nothing else alerts twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from bot.domain.models import Job, Timestamp
from bot.domain.states import StateClass


class EventKind(StrEnum):
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"
    FINISHED = "finished"  # terminal in a state none of the configured sets knows
    STARTED = "started"  # off by default (ALERT_ON_STARTED)
    LONG_RUNNING = "long_running"  # still active past LONG_RUNNING_AFTER_SECONDS
    STALLED = "stalled"  # active, but no progress for STALL_AFTER_SECONDS
    PROGRESSING = "progressing"  # a stalled job that moves again


TERMINAL_KIND: dict[StateClass, EventKind] = {
    StateClass.FAILED: EventKind.FAILED,
    StateClass.SUCCEEDED: EventKind.SUCCEEDED,
    StateClass.CANCELLED: EventKind.CANCELLED,
    StateClass.OTHER: EventKind.FINISHED,
}


class JobEvent(BaseModel):
    """One transition of one job, with the job as it was seen when the transition was found."""

    model_config = ConfigDict(frozen=True)

    org_id: str
    kind: EventKind
    job: Job
    detected_at: Timestamp
    since: Timestamp | None = None  # STALLED / PROGRESSING: when the job last made progress

    @property
    def event_id(self) -> str:
        anchor: datetime | None
        if self.kind in (EventKind.STARTED, EventKind.LONG_RUNNING):
            anchor = self.job.started_at or self.job.created_at
        elif self.kind in (EventKind.STALLED, EventKind.PROGRESSING):
            anchor = self.since or self.job.updated_at
        else:
            anchor = self.job.finished_at
        # UTC, so the same instant sent with another offset is the same event.
        stamp = anchor.astimezone(UTC).isoformat() if anchor is not None else "-"
        return f"{self.org_id}:{self.job.id}:{self.kind.value}:{stamp}"
