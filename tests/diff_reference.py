"""The diff as it was before it was made incremental (issue 11), kept verbatim as an oracle:
`tests/test_diff.py` checks that `bot.alerts.diff` computes the same result for any input.
One addition since: a snapshot carries its run's progress over (`continued`, issue 10), as the
incremental diff does; hung-run detection itself is off here and tested by its own table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from bot.alerts.diff import (
    LAST_SEEN_RESOLUTION_FRACTION,
    _backfill_kind,
    _event_order,
    _transition,
    continued,
)
from bot.domain.events import JobEvent
from bot.domain.models import Job
from bot.domain.snapshot import DiffResult, JobSnapshot
from bot.domain.states import StateClassifier


def reference_diff(
    previous: Mapping[str, JobSnapshot] | None,
    jobs: Sequence[Job],
    now: datetime,
    *,
    org_id: str,
    classifier: StateClassifier,
    backfill: timedelta = timedelta(0),
    vanish_grace: timedelta = timedelta(hours=1),
    alert_on_started: bool = False,
) -> DiffResult:
    """Compare a listing with the snapshots of the last poll; see the module docstring."""
    latest: dict[str, Job] = {}
    for job in jobs:  # a job listed twice: the last one wins
        latest[job.id] = job
    resolution = vanish_grace / LAST_SEEN_RESOLUTION_FRACTION
    upserts: dict[str, JobSnapshot] = {}
    events: list[JobEvent] = []

    for job_id, job in latest.items():
        state_class = classifier.classify(job)
        prev = previous.get(job_id) if previous is not None else None
        current = continued(prev, JobSnapshot.of(job, state_class, now))
        if prev is None or not prev.same_job_state(current) or now - prev.last_seen >= resolution:
            upserts[job_id] = current
        if previous is None:
            kind = _backfill_kind(job, state_class, now, backfill)
        else:
            kind = _transition(prev, current, alert_on_started)
        if kind is not None:
            events.append(JobEvent(org_id=org_id, kind=kind, job=job, detected_at=now))

    removals: list[str] = []
    if previous is not None:
        removals = sorted(
            job_id
            for job_id, snap in previous.items()
            if job_id not in latest and now - snap.last_seen > vanish_grace + resolution
        )
    events.sort(key=_event_order)
    return DiffResult(upserts=upserts, removals=removals, events=events, baseline=previous is None)
