"""What the poller remembers about each job between polls, and what one diff produces.

Pure types: the diff (`bot.alerts.diff`) computes them, `storage.snapshots` and
`storage.outbox` persist them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from bot.domain.events import JobEvent
from bot.domain.models import Job, Timestamp
from bot.domain.states import StateClass


class JobSnapshot(BaseModel):
    """What we remember about one job between two polls (stored as JSON in Redis)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    state: str
    state_class: StateClass
    finished_at: Timestamp | None
    started_at: Timestamp | None
    updated_at: Timestamp
    last_seen: Timestamp

    @classmethod
    def of(cls, job: Job, state_class: StateClass, now: datetime) -> JobSnapshot:
        return cls(
            state=job.state,
            state_class=state_class,
            finished_at=job.finished_at,
            started_at=job.started_at,
            updated_at=job.updated_at,
            last_seen=now,
        )

    def same_job_state(self, other: JobSnapshot) -> bool:
        """Equal in everything but `last_seen`."""
        return (
            self.state == other.state
            and self.state_class == other.state_class
            and self.finished_at == other.finished_at
            and self.started_at == other.started_at
            and self.updated_at == other.updated_at
        )


@dataclass(frozen=True)
class DiffResult:
    upserts: dict[str, JobSnapshot]  # only the snapshots that changed
    removals: list[str]  # job ids gone from the listing for longer than the grace
    events: list[JobEvent]  # ordered by (finished_at or started_at, job id, kind)
    baseline: bool  # this listing records the first baseline
