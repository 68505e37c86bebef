"""The pure heart of the alert pipeline: previous snapshots + a listing -> changes and events.

No I/O and no clock of its own (`now` is a parameter), so every transition is a table test.
`Differ` is the same function fed one job at a time (the Timbal client's stream hands it
each job as it is parsed): it keeps only what changed and the ids it saw, and a job equal to
its snapshot costs one comparison of its fields (`JobSnapshot.describes`), no new object. So
only the changed jobs cross into the result, whatever the size of the listing.

Transitions (`DESIGN.md`, "Job semantics"):

- no previous snapshot (`previous is None`): record a baseline, post nothing, except jobs
  that finished within `backfill` of `now`;
- a job first seen already terminal after the baseline ran entirely between two polls: alert;
- active -> terminal: alert, kind by class (failed / succeeded / cancelled / finished);
- terminal -> active (a re-run): no terminal alert; the next terminal state alerts again,
  its new `finished_at` gives it a new event id;
- terminal -> terminal with another `finished_at` (re-run between two polls): alert; but
  a `finished_at` that appears on a terminal job that had none, with the same `started_at`,
  is the API filling in the same run's finish time after its state: nothing;
- terminal -> terminal, same `finished_at`, another class (an API correction such as
  "done" -> "failed"): alert the new kind (its event id differs by kind, so it is not a
  duplicate of the first alert); same class (e.g. "error" -> "failed"): nothing;
- `started` only with `alert_on_started`: a job seen active with a `started_at` it did not
  have before (queued -> running, or first seen running);
- hung runs (a run is an active job; a new `started_at` is a new run): `stalled` once per
  run when a started run's `rows_emitted` and `updated_at` have not changed for
  `stall_after` by our clock (the event's `since` is the poll that last saw it move: Timbal's
  clock may lag or lead ours, so its `updated_at` only says *whether* it moved), then
  `progressing` when it moves again (and it may stall again); `long_running` once per run
  when it is still active `long_running_after` past its `started_at` (a job still queued:
  its `created_at`). A zero threshold turns its check off. Progress is watched from the first
  poll that sees the run, so a run already stalled when the bot starts alerts `stall_after`
  later; a job waiting in a queue is not stalled (it may run long). A stall's event id is its
  `since`, read from the stored snapshot, so a poll redone after a crash (the snapshot and
  the outbox are committed together) finds the same id; only the lease holder diffs;
- a job missing from the listing is dropped from the snapshot once it has been missing for
  longer than `vanish_grace` (see `last_seen` below).

`last_seen` is kept coarse: it is rewritten only when a snapshot changes anyway or when it is
older than `vanish_grace / 4`. Rewriting it every cycle would cost one HSET (and one JSON
argument) per job per cycle for nothing but a timestamp; this way a quiet org commits
nothing but events. Since the stored value lags the truth by less than that resolution, a
job is dropped once `now - last_seen > vanish_grace + resolution`, which keeps every
vanished job for at least `vanish_grace` (and at most 1.25 x it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from bot.domain.events import TERMINAL_KIND, EventKind, JobEvent
from bot.domain.models import Job
from bot.domain.snapshot import DiffResult, JobSnapshot
from bot.domain.states import StateClass, StateClassifier

LAST_SEEN_RESOLUTION_FRACTION = 4  # last_seen is refreshed every vanish_grace / 4
_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class DiffRules:
    """What the diff looks for, from the settings (see the module docstring); a zero
    `stall_after` or `long_running_after` turns that check off."""

    backfill: timedelta = timedelta(0)
    vanish_grace: timedelta = timedelta(hours=1)
    alert_on_started: bool = False
    stall_after: timedelta = timedelta(0)
    long_running_after: timedelta = timedelta(0)


def diff(
    previous: Mapping[str, JobSnapshot] | None,
    jobs: Iterable[Job],
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
    rules = DiffRules(backfill, vanish_grace, alert_on_started, stall_after, long_running_after)
    differ = Differ(previous, now, org_id=org_id, classifier=classifier, rules=rules)
    for job in jobs:
        differ.add(job)
    return differ.result()


class Differ:
    """`diff`, one job at a time: `add()` each job of the listing, then `result()`."""

    def __init__(
        self,
        previous: Mapping[str, JobSnapshot] | None,
        now: datetime,
        *,
        org_id: str,
        classifier: StateClassifier,
        rules: DiffRules = DiffRules(),
    ) -> None:
        self._previous = previous
        self._now = now
        self._org_id = org_id
        self._classifier = classifier
        self._backfill = rules.backfill
        self._alert_on_started = rules.alert_on_started
        resolution = rules.vanish_grace / LAST_SEEN_RESOLUTION_FRACTION
        self._refresh_by = now - resolution  # a last_seen at or before this is rewritten
        self._gone_before = now - (rules.vanish_grace + resolution)  # missing and older: removed
        stall_after, long_running_after = rules.stall_after, rules.long_running_after
        self._listed: set[str] = set()
        self._known = 0  # listed ids that have a snapshot (to skip the search for vanished)
        self._upserts: dict[str, JobSnapshot] = {}
        self._events: dict[str, JobEvent] = {}
        self._classes: dict[tuple[str, bool], StateClass] = {}  # a listing has few states
        # A run whose last progress is at or before this has stalled (None: not watched).
        self._stalled_by = now - stall_after if stall_after > timedelta(0) else None
        self._long_by = now - long_running_after if long_running_after > timedelta(0) else None
        self._watch = previous is not None and (self._stalled_by or self._long_by) is not None

    def add(self, job: Job) -> None:
        job_id = job.id
        previous = self._previous
        prev = previous.get(job_id) if previous is not None else None
        if job_id in self._listed:  # a job listed twice: the last one wins
            self._upserts.pop(job_id, None)
            self._events.pop(job_id, None)
        else:
            self._listed.add(job_id)
            self._known += prev is not None
        finished = job.finished_at is not None
        state_class = self._classes.get((job.state, finished))
        if state_class is None:
            state_class = self._classifier.classify_state(job.state, finished=finished)
            self._classes[job.state, finished] = state_class
        if (
            prev is not None
            and prev.describes(job, state_class)
            # An active run stored without its progress (an older format) learns it now.
            and (prev.progress_at is not None or state_class is not StateClass.ACTIVE)
        ):
            # Nothing an event depends on changed (see _transition): a hung run's alert, or at
            # most a refresh.
            if self._watch and state_class is StateClass.ACTIVE and self._hung(job, prev, prev):
                return
            if prev.last_seen <= self._refresh_by:
                self._upserts[job_id] = prev.seen(self._now)
            return
        current = continued(prev, JobSnapshot.of(job, state_class, self._now))
        self._upserts[job_id] = current
        if previous is None:
            kind = _backfill_kind(job, state_class, self._now, self._backfill)
        else:
            kind = _transition(prev, current, self._alert_on_started)
        if kind is not None:
            self._events[job_id] = JobEvent(
                org_id=self._org_id, kind=kind, job=job, detected_at=self._now
            )
        elif self._watch and state_class is StateClass.ACTIVE:
            self._hung(job, prev, current)

    def _hung(self, job: Job, prev: JobSnapshot | None, current: JobSnapshot) -> bool:
        """Raise a hung-run event for `current` (a continuation of `prev`), if one is due;
        True when it did (and upserted the snapshot that records it)."""
        kind: EventKind | None = None
        since: datetime | None = None
        marked = current
        started = current.started_at
        if (
            prev is not None
            and prev.stalled
            and not current.stalled  # it moved (see `continued`)
            and prev.started_at == started  # the same run
            and prev.state_class is StateClass.ACTIVE
        ):
            kind, since = EventKind.PROGRESSING, prev.progressed_at
        elif (
            self._stalled_by is not None
            and started is not None  # waiting in a queue is not a stall
            and not current.stalled
            and current.progressed_at <= self._stalled_by
        ):
            kind, since = EventKind.STALLED, current.progressed_at
            marked = replace(current, stalled=True, last_seen=self._now)
        elif (
            self._long_by is not None
            and not current.long_running
            and (started or job.created_at) <= self._long_by
        ):
            kind = EventKind.LONG_RUNNING
            marked = replace(current, long_running=True, last_seen=self._now)
        if kind is None:
            return False
        self._upserts[job.id] = marked
        self._events[job.id] = JobEvent(
            org_id=self._org_id, kind=kind, job=job, detected_at=self._now, since=since
        )
        return True

    def result(self) -> DiffResult:
        previous = self._previous
        removals: list[str] = []
        if previous is not None and self._known < len(previous):  # some job is not listed
            listed, gone_before = self._listed, self._gone_before
            removals = sorted(
                job_id
                for job_id, snap in previous.items()
                if job_id not in listed and snap.last_seen < gone_before
            )
        events = sorted(self._events.values(), key=_event_order)
        return DiffResult(
            upserts=dict(self._upserts),
            removals=removals,
            events=events,
            baseline=previous is None,
        )


def _transition(
    prev: JobSnapshot | None, current: JobSnapshot, alert_on_started: bool
) -> EventKind | None:
    """The event a job's move from `prev` (None: not seen before) to `current` raises."""
    if current.state_class.terminal:
        if prev is None or not prev.state_class.terminal:
            return TERMINAL_KIND[current.state_class]
        if prev.state_class != current.state_class:
            return TERMINAL_KIND[current.state_class]
        if prev.finished_at is None and prev.started_at == current.started_at:
            return None  # the same run's finish time, filled in after its state: alerted
        if prev.finished_at != current.finished_at:
            return TERMINAL_KIND[current.state_class]
        return None
    if (
        alert_on_started
        and current.started_at is not None
        and (prev is None or prev.started_at != current.started_at or prev.state_class.terminal)
    ):
        return EventKind.STARTED
    return None


def continued(prev: JobSnapshot | None, current: JobSnapshot) -> JobSnapshot:
    """`current` with what it carries over from `prev` when both are the same active run: the
    time of its last progress while it has not moved, and its hung-run marks (a move clears
    `stalled`; `long_running` stays for the run)."""
    if (
        prev is None
        or prev.state_class is not StateClass.ACTIVE
        or current.state_class is not StateClass.ACTIVE
    ):
        return current
    if prev.started_at is None and current.started_at is not None:
        # A queued job starts: the same run (its long-running alert, from created_at, is
        # not said again), whose progress counts from now.
        return replace(current, long_running=prev.long_running) if prev.long_running else current
    if prev.started_at != current.started_at:
        return current
    moved = prev.rows != current.rows or prev.updated_at != current.updated_at
    if not moved:
        return replace(
            current,
            progress_at=prev.progress_at or current.progress_at,
            stalled=prev.stalled,
            long_running=prev.long_running,
        )
    # It moved: its progress is this poll's (already in `current`), and it is not stalled.
    return replace(current, long_running=prev.long_running) if prev.long_running else current


def _backfill_kind(
    job: Job, state_class: StateClass, now: datetime, backfill: timedelta
) -> EventKind | None:
    """On the baseline, only jobs that finished within `backfill` of `now` alert."""
    if not state_class.terminal or backfill <= timedelta(0):
        return None
    finished = job.finished_at or job.updated_at  # a terminal state without finished_at
    if now - finished <= backfill:
        return TERMINAL_KIND[state_class]
    return None


def _event_order(event: JobEvent) -> tuple[datetime, str, str]:
    job = event.job
    anchor = job.finished_at if event.kind is not EventKind.STARTED else job.started_at
    return (anchor or _EARLIEST, job.id, event.kind.value)
