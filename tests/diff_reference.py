"""The diff as it was before it was made incremental (issue 11), kept as an oracle:
`tests/test_diff.py` checks that `bot.alerts.diff` computes the same result for any input.

Hung-run detection (issue 10) is written here again, on its own, in the same whole-listing
style: what a run carries over from its last snapshot, then which hung event is due. It
shares no code with `bot.alerts.diff` but the terminal transition table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from bot.alerts.diff import (
    LAST_SEEN_RESOLUTION_FRACTION,
    _backfill_kind,
    _event_order,
    _transition,
)
from bot.domain.events import EventKind, JobEvent
from bot.domain.models import Job
from bot.domain.snapshot import DiffResult, JobSnapshot
from bot.domain.states import StateClass, StateClassifier

ACTIVE = StateClass.ACTIVE


def _carried(prev: JobSnapshot | None, current: JobSnapshot) -> JobSnapshot:
    """The same active run keeps its last progress while it has not moved, its stall mark
    until it moves, and its long-running mark for good."""
    same_run = (
        prev is not None
        and prev.state_class is ACTIVE
        and current.state_class is ACTIVE
        and prev.started_at == current.started_at
    )
    if (
        prev is not None
        and prev.state_class is ACTIVE
        and current.state_class is ACTIVE
        and prev.started_at is None
        and current.started_at is not None
    ):
        return replace(current, long_running=prev.long_running)  # a queued job starts
    if not same_run:
        return current
    assert prev is not None
    still = prev.rows == current.rows and prev.updated_at == current.updated_at
    return replace(
        current,
        progress_at=(prev.progress_at or current.progress_at) if still else current.progress_at,
        stalled=prev.stalled and still,
        long_running=prev.long_running,
    )


def _hung(
    prev: JobSnapshot | None,
    current: JobSnapshot,
    job: Job,
    now: datetime,
    stall_after: timedelta,
    long_running_after: timedelta,
) -> tuple[EventKind, datetime | None, JobSnapshot] | None:
    if current.state_class is not ACTIVE:
        return None
    if (
        prev is not None
        and prev.state_class is ACTIVE
        and prev.started_at == current.started_at
        and prev.stalled
        and not current.stalled
    ):
        return EventKind.PROGRESSING, prev.progress_at or prev.last_seen, current
    progress = current.progress_at or current.last_seen
    if (
        stall_after > timedelta(0)
        and current.started_at is not None
        and not current.stalled
        and now - progress >= stall_after
    ):
        return EventKind.STALLED, progress, replace(current, stalled=True, last_seen=now)
    if (
        long_running_after > timedelta(0)
        and not current.long_running
        and now - (job.started_at or job.created_at) >= long_running_after
    ):
        return EventKind.LONG_RUNNING, None, replace(current, long_running=True, last_seen=now)
    return None


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
    stall_after: timedelta = timedelta(0),
    long_running_after: timedelta = timedelta(0),
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
        current = _carried(prev, JobSnapshot.of(job, state_class, now))
        if (
            prev is None
            or not prev.same_job_state(current)
            or now - prev.last_seen >= resolution
            or (prev.progress_at is None and current.progress_at is not None)  # learnt now
        ):
            upserts[job_id] = current
        if previous is None:
            kind = _backfill_kind(job, state_class, now, backfill)
        else:
            kind = _transition(prev, current, alert_on_started)
        since: datetime | None = None
        watched = stall_after > timedelta(0) or long_running_after > timedelta(0)
        if kind is None and previous is not None and watched:
            hung = _hung(prev, current, job, now, stall_after, long_running_after)
            if hung is not None:
                kind, since, marked = hung
                if marked is not current:
                    upserts[job_id] = marked
        if kind is not None:
            events.append(JobEvent(org_id=org_id, kind=kind, job=job, detected_at=now, since=since))

    removals: list[str] = []
    if previous is not None:
        removals = sorted(
            job_id
            for job_id, snap in previous.items()
            if job_id not in latest and now - snap.last_seen > vanish_grace + resolution
        )
    events.sort(key=_event_order)
    return DiffResult(upserts=upserts, removals=removals, events=events, baseline=previous is None)
