"""Jobs that hang without failing (issue 10): `stalled`, `progressing`, `long_running`.

Scripted runs polled through the pure diff, one poll a minute, with the snapshots carried from
poll to poll as the store would (each one encoded and decoded, as after a restart)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.alerts.diff import diff
from bot.domain.events import EventKind, JobEvent
from bot.domain.models import Job
from bot.domain.snapshot import JobSnapshot
from bot.domain.states import StateClassifier
from storage.snapshot_codec import Decoder, encode
from tests.fakes import make_job

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
STALL = timedelta(minutes=15)
LONG = timedelta(hours=2)
CLASSIFIER = StateClassifier()
ORG = "org_h"


def job(state: str = "running", *, rows: int = 0, updated: datetime, **fields: Any) -> Job:
    fields.setdefault("started_at", T0)
    body = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}
    return Job.model_validate(
        make_job(
            "j1",
            state=state,
            rows_emitted=rows,
            created_at=T0.isoformat(),
            updated_at=updated.isoformat(),
            **body,
        )
    )


@dataclass
class Poller:
    """The diff as the poller runs it, with its snapshots stored between polls."""

    stall_after: timedelta = STALL
    long_running_after: timedelta = LONG
    vanish_grace: timedelta = timedelta(hours=1)
    state: dict[str, JobSnapshot] | None = None
    events: list[tuple[datetime, JobEvent]] = field(default_factory=list)

    def poll(self, now: datetime, *jobs: Job) -> list[JobEvent]:
        result = diff(
            self.state,
            jobs,
            now,
            org_id=ORG,
            classifier=CLASSIFIER,
            stall_after=self.stall_after,
            long_running_after=self.long_running_after,
            vanish_grace=self.vanish_grace,
        )
        state = dict(self.state or {})
        state.update(result.upserts)
        decoder = Decoder()  # what a restarted poller would load
        self.state = {k: decoder.decode(encode(v)) for k, v in state.items()}
        self.events += [(now, e) for e in result.events]
        return result.events

    def through(self, start: datetime, end: datetime, listing: Any) -> None:
        """Poll every minute from `start` to `end` inclusive; `listing(now)` gives the jobs."""
        now = start
        while now <= end:
            self.poll(now, *listing(now))
            now += MINUTE

    def kinds(self) -> list[tuple[datetime, EventKind]]:
        return [(at, e.kind) for at, e in self.events]


def steady(rows: int, updated: datetime) -> Any:
    return lambda now: [job(rows=rows, updated=updated)]


def moving(since: datetime) -> Any:
    """A run reporting progress every minute from `since`."""
    return lambda now: [job(rows=int((now - since) / MINUTE) * 100, updated=now)]


def test_a_run_that_stops_moving_stalls_once_with_its_last_progress() -> None:
    poller = Poller()
    last = T0 + 10 * MINUTE
    poller.poll(T0, job(rows=0, updated=T0))  # the baseline
    poller.through(T0 + MINUTE, last, moving(T0))
    poller.through(last + MINUTE, last + 60 * MINUTE, steady(1000, last))
    assert poller.kinds() == [(last + STALL, EventKind.STALLED)]
    [(_, stalled)] = poller.events
    assert stalled.since == last  # when it last moved, not when it was seen stalled
    assert stalled.event_id == f"{ORG}:j1:stalled:{last.isoformat()}"
    assert stalled.job.rows_emitted == 1000


def test_a_stalled_run_that_moves_again_is_progressing_and_may_stall_again() -> None:
    poller = Poller()
    poller.poll(T0, job(rows=5, updated=T0))
    poller.through(T0 + MINUTE, T0 + 20 * MINUTE, steady(5, T0))
    resumed = T0 + 21 * MINUTE
    poller.poll(resumed, job(rows=900, updated=resumed))
    poller.through(resumed + MINUTE, resumed + 40 * MINUTE, steady(900, resumed))
    assert poller.kinds() == [
        (T0 + STALL, EventKind.STALLED),
        (resumed, EventKind.PROGRESSING),
        (resumed + STALL, EventKind.STALLED),
    ]
    stall, progressing, again = (e for _, e in poller.events)
    assert progressing.since == stall.since == T0  # the stall it ends
    assert progressing.job.rows_emitted == 900
    assert again.since == resumed
    assert len({e.event_id for _, e in poller.events}) == 3  # three events, three ids


def test_rows_that_move_under_an_unchanged_updated_at_are_progress() -> None:
    poller = Poller()
    poller.poll(T0, job(rows=1, updated=T0))
    poller.through(
        T0 + MINUTE,
        T0 + 30 * MINUTE,
        lambda now: [job(rows=int((now - T0) / MINUTE), updated=T0)],
    )
    assert poller.events == []


def test_a_long_run_alerts_once_and_a_new_run_may_alert_again() -> None:
    poller = Poller()
    poller.poll(T0, job(rows=0, updated=T0))
    poller.through(T0 + MINUTE, T0 + LONG + 30 * MINUTE, moving(T0))
    assert poller.kinds() == [(T0 + LONG, EventKind.LONG_RUNNING)]
    [(_, long_run)] = poller.events
    assert long_run.event_id == f"{ORG}:j1:long_running:{T0.isoformat()}"
    rerun = T0 + LONG + 31 * MINUTE  # the same job id started again: a new run
    poller.through(
        rerun,
        rerun + LONG,
        lambda now: [job(rows=int((now - rerun) / MINUTE), updated=now, started_at=rerun)],
    )
    assert poller.kinds()[1:] == [(rerun + LONG, EventKind.LONG_RUNNING)]


def test_a_stalled_run_that_fails_is_a_failure_not_progress() -> None:
    poller = Poller()
    poller.poll(T0, job(rows=0, updated=T0))
    poller.through(T0 + MINUTE, T0 + 20 * MINUTE, steady(0, T0))
    failed_at = T0 + 21 * MINUTE
    poller.poll(failed_at, job("failed", rows=0, updated=failed_at, finished_at=failed_at))
    assert poller.kinds() == [(T0 + STALL, EventKind.STALLED), (failed_at, EventKind.FAILED)]


def test_zero_thresholds_turn_the_checks_off() -> None:
    poller = Poller(stall_after=timedelta(0), long_running_after=timedelta(0))
    poller.poll(T0, job(rows=0, updated=T0))
    poller.through(T0 + MINUTE, T0 + 3 * LONG, steady(0, T0))
    assert poller.events == []


def test_an_unchanged_hung_run_is_not_rewritten_every_poll() -> None:
    poller = Poller(vanish_grace=timedelta(days=1))  # no refresh of last_seen in this hour
    poller.poll(T0, job(rows=0, updated=T0))
    writes: list[int] = []
    for minute in range(1, 40):
        before = dict(poller.state or {})
        poller.poll(T0 + minute * MINUTE, job(rows=0, updated=T0))
        writes.append(sum(1 for k, v in (poller.state or {}).items() if before.get(k) != v))
    assert writes[int(STALL / MINUTE) - 1] == 1  # the poll that marked it stalled
    assert sum(writes) == 1  # and no other: the mark is in the snapshot


def test_a_stalled_run_that_keeps_running_also_runs_long_once() -> None:
    poller = Poller()
    poller.poll(T0, job(rows=0, updated=T0))
    poller.through(T0 + MINUTE, T0 + LONG + 10 * MINUTE, steady(0, T0))
    moved = T0 + LONG + 11 * MINUTE
    poller.poll(moved, job(rows=10, updated=moved))
    poller.through(moved + MINUTE, moved + 10 * MINUTE, moving(moved))
    assert poller.kinds() == [
        (T0 + STALL, EventKind.STALLED),
        (T0 + LONG, EventKind.LONG_RUNNING),  # still active past the threshold: said once
        (moved, EventKind.PROGRESSING),
    ]


def test_a_run_already_stalled_when_the_bot_starts_alerts_after_the_threshold() -> None:
    poller = Poller()
    start = T0 + timedelta(minutes=30)  # the run last moved at T0, as Timbal says
    assert poller.poll(start, job(rows=3, updated=T0)) == []  # the baseline posts nothing
    poller.through(start + MINUTE, start + 30 * MINUTE, steady(3, T0))
    # Progress is watched from the first poll that sees the run, by our clock.
    [(at, stalled)] = poller.events
    assert (at, stalled.kind, stalled.since) == (start + STALL, EventKind.STALLED, start)


def test_a_job_waiting_in_the_queue_is_not_stalled_but_may_run_long() -> None:
    poller = Poller()
    queued = job("queued", updated=T0, started_at=None)
    poller.poll(T0, queued)
    poller.through(T0 + MINUTE, T0 + LONG + 30 * MINUTE, lambda now: [queued])
    assert poller.kinds() == [(T0 + LONG, EventKind.LONG_RUNNING)]  # from its created_at
    [(_, long_run)] = poller.events
    assert long_run.event_id == f"{ORG}:j1:long_running:{T0.isoformat()}"


def test_a_finished_job_is_never_hung() -> None:
    poller = Poller()
    done = job("succeeded", rows=7, updated=T0, finished_at=T0 + MINUTE)
    poller.poll(T0, done)
    poller.through(T0 + MINUTE, T0 + 3 * LONG, lambda now: [done])
    assert poller.events == []


def test_timbal_s_clock_ahead_or_behind_ours_changes_nothing() -> None:
    for skew in (timedelta(hours=1), -timedelta(minutes=20), -timedelta(days=2)):
        poller = Poller()
        poller.poll(T0, job(rows=0, updated=T0 + skew))
        poller.through(  # a run that moves every minute, stamped by a skewed clock
            T0 + MINUTE,
            T0 + 40 * MINUTE,
            lambda now, skew=skew: [job(rows=int((now - T0) / MINUTE), updated=now + skew)],
        )
        assert poller.events == [], skew
        stop = T0 + 41 * MINUTE
        poller.through(stop, stop + 20 * MINUTE, steady(40, T0 + 40 * MINUTE + skew))
        [(at, stalled)] = poller.events
        assert (at, stalled.since) == (T0 + 40 * MINUTE + STALL, T0 + 40 * MINUTE), skew


def test_a_job_first_seen_after_the_baseline_with_an_old_updated_at_is_not_stalled_yet() -> None:
    poller = Poller()
    poller.poll(T0, job(rows=0, updated=T0))
    late = job(rows=5, updated=T0 - timedelta(hours=3))
    late = late.model_copy(update={"id": "j2"})
    poller.poll(T0 + MINUTE, job(rows=1, updated=T0 + MINUTE), late)
    assert poller.events == []


def test_a_job_that_ran_long_in_the_queue_is_not_said_long_again_once_it_starts() -> None:
    poller = Poller()
    queued = job("queued", updated=T0, started_at=None)
    poller.poll(T0, queued)
    poller.through(T0 + MINUTE, T0 + LONG + 10 * MINUTE, lambda now: [queued])
    started = T0 + LONG + 11 * MINUTE
    poller.through(
        started,
        started + LONG + 10 * MINUTE,
        lambda now: [job(rows=int((now - started) / MINUTE), updated=now, started_at=started)],
    )
    assert poller.kinds() == [(T0 + LONG, EventKind.LONG_RUNNING)]  # once for the run
