"""What the poller remembers about each job between polls, and what one diff produces.

Pure types: the diff (`bot.alerts.diff`) computes them, `storage.snapshots` and
`storage.outbox` persist them. A snapshot is a small frozen value (slots, no validation):
the poller holds one per tracked job, so its size and cost are the poller's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.domain.events import JobEvent
from bot.domain.models import Job
from bot.domain.states import StateClass


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """What we remember about one job between two polls.

    `rows` and `progress_at` watch an active run for progress: `progress_at` is the poll (to
    the second) that first saw its `rows_emitted` and `updated_at` as they are now, by our
    clock, never by Timbal's (a lagging `updated_at` must not make a moving run look stalled);
    None for a job that is not active. `stalled` and `long_running` record that the run has
    alerted so, once per run. `rows` is None for a snapshot stored before it was kept.
    """

    state: str
    state_class: StateClass
    finished_at: datetime | None
    started_at: datetime | None
    updated_at: datetime
    last_seen: datetime
    rows: int | None = None
    progress_at: datetime | None = None
    stalled: bool = False
    long_running: bool = False

    @classmethod
    def of(cls, job: Job, state_class: StateClass, now: datetime) -> JobSnapshot:
        return cls(
            state=job.state,
            state_class=state_class,
            finished_at=job.finished_at,
            started_at=job.started_at,
            updated_at=job.updated_at,
            last_seen=now,
            rows=job.rows_emitted,
            progress_at=now.replace(microsecond=0) if state_class is StateClass.ACTIVE else None,
        )

    @property
    def progressed_at(self) -> datetime:
        """When the run last made progress (see the class docstring)."""
        return self.last_seen if self.progress_at is None else self.progress_at

    def same_job_state(self, other: JobSnapshot) -> bool:
        """Equal in what the job says (not in `last_seen` or what the poller derived)."""
        return (
            self.state == other.state
            and self.state_class == other.state_class
            and self.finished_at == other.finished_at
            and self.started_at == other.started_at
            and self.updated_at == other.updated_at
            and self.rows == other.rows
        )

    def describes(self, job: Job, state_class: StateClass) -> bool:
        """`same_job_state` with `JobSnapshot.of(job, state_class, …)`, without building it."""
        return (
            self.state == job.state
            and self.state_class == state_class
            and self.finished_at == job.finished_at
            and self.started_at == job.started_at
            and self.updated_at == job.updated_at
            and self.rows == job.rows_emitted
        )

    def seen(self, now: datetime) -> JobSnapshot:
        """The same snapshot, seen at `now`."""
        return JobSnapshot(  # not dataclasses.replace: this runs for every job, now and then
            self.state,
            self.state_class,
            self.finished_at,
            self.started_at,
            self.updated_at,
            now,
            self.rows,
            self.progress_at,
            self.stalled,
            self.long_running,
        )


@dataclass(frozen=True)
class DiffResult:
    upserts: dict[str, JobSnapshot]  # only the snapshots that changed
    removals: list[str]  # job ids gone from the listing for longer than the grace
    events: list[JobEvent]  # ordered by (finished_at or started_at, job id, kind)
    baseline: bool  # this listing records the first baseline
