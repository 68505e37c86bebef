"""bot.alerts.diff: every transition by table, and properties over random listings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.alerts.diff import diff
from bot.domain.events import EventKind
from bot.domain.models import Job
from bot.domain.snapshot import DiffResult, JobSnapshot
from bot.domain.states import StateClass, StateClassifier
from tests.diff_reference import reference_diff
from tests.fakes import make_job

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=2)
F1 = T0 + timedelta(minutes=30)
F2 = T0 + timedelta(minutes=90)
S1 = T0 + timedelta(minutes=5)
S2 = T0 + timedelta(minutes=60)
CLASSIFIER = StateClassifier()
ORG = "org_x"


def job(job_id: str = "j1", state: str = "running", **fields: Any) -> Job:
    fields.setdefault("created_at", T0.isoformat())
    fields.setdefault("updated_at", T0.isoformat())
    for name in ("finished_at", "started_at"):
        if isinstance(fields.get(name), datetime):
            fields[name] = fields[name].isoformat()
    return Job.model_validate(make_job(job_id, state=state, **fields))


def snap(job_: Job, last_seen: datetime = NOW - timedelta(minutes=1)) -> JobSnapshot:
    return JobSnapshot.of(job_, CLASSIFIER.classify(job_), last_seen)


def run(previous: Mapping[str, JobSnapshot] | None, *jobs: Job, **kwargs: Any) -> DiffResult:
    return diff(previous, list(jobs), NOW, org_id=ORG, classifier=CLASSIFIER, **kwargs)


def kinds(result: DiffResult) -> list[str]:
    return [e.kind.value for e in result.events]


def apply(previous: Mapping[str, JobSnapshot] | None, result: DiffResult) -> dict[str, JobSnapshot]:
    state = dict(previous or {})
    state.update(result.upserts)
    for job_id in result.removals:
        del state[job_id]
    return state


# --- baseline -----------------------------------------------------------------------------


def test_baseline_records_every_job_and_posts_nothing() -> None:
    jobs = [
        job("a", "running", started_at=S1),
        job("b", "failed", finished_at=NOW - timedelta(seconds=1)),
        job("c", "queued"),
    ]
    result = run(None, *jobs)
    assert result.baseline is True
    assert result.events == []
    assert set(result.upserts) == {"a", "b", "c"}
    assert result.upserts["b"].state_class is StateClass.FAILED
    assert result.upserts["a"].last_seen == NOW
    assert result.removals == []


@pytest.mark.parametrize(
    ("state", "finished_ago", "updated_ago", "expected"),
    [
        ("failed", timedelta(minutes=5), None, ["failed"]),
        ("done", timedelta(minutes=10), None, ["succeeded"]),  # exactly at the window's edge
        ("failed", timedelta(minutes=10, seconds=1), None, []),  # just outside
        ("cancelled", timedelta(minutes=1), None, ["cancelled"]),
        ("weird", timedelta(minutes=1), None, ["finished"]),
        ("running", None, timedelta(minutes=1), []),  # active never backfills
        ("error", None, timedelta(minutes=2), ["failed"]),  # terminal without finished_at
        ("error", None, timedelta(hours=1), []),
    ],
)
def test_baseline_backfill_window(
    state: str, finished_ago: timedelta | None, updated_ago: timedelta | None, expected: list[str]
) -> None:
    fields: dict[str, Any] = {}
    if finished_ago is not None:
        fields["finished_at"] = NOW - finished_ago
    if updated_ago is not None:
        fields["updated_at"] = (NOW - updated_ago).isoformat()
    result = run(None, job("a", state, **fields), backfill=timedelta(minutes=10))
    assert kinds(result) == expected
    assert result.baseline is True


def test_empty_previous_is_a_recorded_baseline_not_a_first_poll() -> None:
    result = run({}, job("a", "failed", finished_at=F1))
    assert result.baseline is False
    assert kinds(result) == ["failed"]


# --- transitions after the baseline --------------------------------------------------------


TRANSITIONS: list[tuple[str, Job | None, Job, list[str]]] = [
    # (case, previous job or None = first seen, current job, expected event kinds)
    ("new active", None, job(state="running"), []),
    ("new queued", None, job(state="queued"), []),
    ("new failed between polls", None, job(state="failed", finished_at=F1), ["failed"]),
    ("new succeeded", None, job(state="succeeded", finished_at=F1), ["succeeded"]),
    ("new canceled", None, job(state="canceled", finished_at=F1), ["cancelled"]),
    ("new unknown terminal", None, job(state="exploded", finished_at=F1), ["finished"]),
    ("active -> failed", job(state="running"), job(state="failed", finished_at=F1), ["failed"]),
    ("active -> error", job(state="running"), job(state="ERROR", finished_at=F1), ["failed"]),
    ("active -> done", job(state="running"), job(state="done", finished_at=F1), ["succeeded"]),
    (
        "active -> cancelled",
        job(state="queued"),
        job(state="cancelled", finished_at=F1),
        ["cancelled"],
    ),
    (
        "active -> unknown terminal",
        job(state="running"),
        job(state="vanquished", finished_at=F1),
        ["finished"],
    ),
    ("active -> failed, no finished_at", job(state="running"), job(state="failed"), ["failed"]),
    ("unknown active stays active", job(state="running"), job(state="warming_up"), []),
    ("queued -> running", job(state="queued"), job(state="running", started_at=S1), []),
    ("terminal -> re-run", job(state="failed", finished_at=F1), job(state="running"), []),
    (
        "terminal -> terminal, new finished_at",
        job(state="failed", finished_at=F1),
        job(state="failed", finished_at=F2),
        ["failed"],
    ),
    (
        "terminal unchanged",
        job(state="failed", finished_at=F1),
        job(state="failed", finished_at=F1),
        [],
    ),
    (
        "terminal, same class renamed",
        job(state="error", finished_at=F1),
        job(state="failed", finished_at=F1),
        [],
    ),
    (
        "terminal corrected done -> failed",
        job(state="done", finished_at=F1),
        job(state="failed", finished_at=F1),
        ["failed"],
    ),
    (
        "terminal, finished_at cleared but state terminal",
        job(state="failed", finished_at=F1),
        job(state="failed"),
        ["failed"],
    ),
]


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [t[1:] for t in TRANSITIONS],
    ids=[t[0] for t in TRANSITIONS],
)
def test_transition(previous: Job | None, current: Job, expected: list[str]) -> None:
    prev = {previous.id: snap(previous)} if previous is not None else {}
    result = run(prev, current)
    assert kinds(result) == expected
    for event in result.events:
        assert event.org_id == ORG
        assert event.job == current
        assert event.detected_at == NOW


def test_rerun_that_fails_again_has_a_new_event_id() -> None:
    first = run({"j1": snap(job(state="running"))}, job(state="failed", finished_at=F1))
    state = apply({"j1": snap(job(state="running"))}, first)
    rerun = run(state, job(state="running", started_at=S2))
    assert rerun.events == []
    state = apply(state, rerun)
    second = run(state, job(state="failed", finished_at=F2))
    assert kinds(first) == kinds(second) == ["failed"]
    assert first.events[0].event_id == f"{ORG}:j1:failed:{F1.isoformat()}"
    assert second.events[0].event_id == f"{ORG}:j1:failed:{F2.isoformat()}"


def test_correction_event_id_differs_by_kind() -> None:
    done = job(state="done", finished_at=F1)
    result = run({"j1": snap(done)}, job(state="failed", finished_at=F1))
    assert result.events[0].event_id == f"{ORG}:j1:failed:{F1.isoformat()}"
    assert result.upserts["j1"].state_class is StateClass.FAILED


# --- started (opt-in) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (job(state="queued"), job(state="running", started_at=S1), ["started"]),
        (None, job(state="running", started_at=S1), ["started"]),
        (None, job(state="queued"), []),
        (job(state="running", started_at=S1), job(state="running", started_at=S1), []),
        (job(state="failed", finished_at=F1), job(state="running", started_at=S2), ["started"]),
        (job(state="running", started_at=S1), job(state="failed", finished_at=F1), ["failed"]),
    ],
)
def test_started_only_when_asked(previous: Job | None, current: Job, expected: list[str]) -> None:
    prev = {previous.id: snap(previous)} if previous is not None else {}
    assert kinds(run(prev, current, alert_on_started=True)) == expected
    assert "started" not in kinds(run(prev, current))


def test_started_event_id_uses_started_at() -> None:
    result = run({}, job(state="running", started_at=S1), alert_on_started=True)
    assert result.events[0].event_id == f"{ORG}:j1:started:{S1.isoformat()}"


def test_no_started_events_on_baseline() -> None:
    result = run(None, job(state="running", started_at=S1), alert_on_started=True)
    assert result.events == []


# --- upserts, last_seen, vanished jobs -------------------------------------------------------


def test_unchanged_job_seen_recently_is_not_rewritten() -> None:
    running = job(state="running", started_at=S1)
    result = run({"j1": snap(running, last_seen=NOW - timedelta(minutes=14))}, running)
    assert result.upserts == {}
    assert result.events == []


def test_unchanged_job_refreshes_last_seen_once_per_resolution() -> None:
    running = job(state="running", started_at=S1)
    before = snap(running, last_seen=NOW - timedelta(minutes=15))
    result = run({"j1": before}, running)
    assert result.upserts == {"j1": before.seen(NOW)}  # the run's last progress is kept
    assert result.upserts["j1"].last_seen == NOW


def test_zero_grace_refreshes_every_cycle() -> None:
    running = job(state="running")
    result = run({"j1": snap(running, last_seen=NOW)}, running, vanish_grace=timedelta(0))
    assert list(result.upserts) == ["j1"]


def test_progress_on_a_running_job_is_recorded_without_an_event() -> None:
    before = job(state="running", started_at=S1)
    after = job(state="running", started_at=S1, updated_at=NOW.isoformat())
    result = run({"j1": snap(before)}, after)
    assert result.upserts["j1"].updated_at == NOW
    assert result.events == []


@pytest.mark.parametrize(
    ("missing_for", "removed"),
    [
        (timedelta(minutes=30), False),
        (timedelta(hours=1, minutes=15), False),  # grace + resolution: still kept
        (timedelta(hours=1, minutes=15, seconds=1), True),
        (timedelta(days=3), True),
    ],
)
def test_vanished_jobs_are_dropped_after_the_grace(missing_for: timedelta, removed: bool) -> None:
    gone = snap(job("gone", "failed", finished_at=F1), last_seen=NOW - missing_for)
    result = run({"gone": gone, "j1": snap(job())}, job())
    assert result.removals == (["gone"] if removed else [])
    assert result.events == []


def test_a_vanished_job_is_kept_at_least_the_grace_after_it_was_last_listed() -> None:
    grace = timedelta(hours=1)
    running = job(state="running")
    state: dict[str, JobSnapshot] = {}
    t = NOW
    last_listed = t
    for minute in range(0, 200):  # listed for 200 minutes, one poll a minute
        t = NOW + timedelta(minutes=minute)
        last_listed = t
        state = apply(state, diff(state, [running], t, org_id=ORG, classifier=CLASSIFIER))
    while True:
        t += timedelta(minutes=1)
        result = diff(state, [], t, org_id=ORG, classifier=CLASSIFIER, vanish_grace=grace)
        if result.removals:
            break
        state = apply(state, result)
    assert grace < t - last_listed <= grace * 1.25 + timedelta(minutes=1)


# --- listing oddities, ordering ----------------------------------------------------------------


def test_duplicate_ids_last_one_wins() -> None:
    result = run(
        {"j1": snap(job(state="running"))},
        job(state="failed", finished_at=F1),
        job(state="succeeded", finished_at=F2),
    )
    assert kinds(result) == ["succeeded"]
    assert result.upserts["j1"].finished_at == F2


def test_events_are_ordered_by_finished_at_then_job_id() -> None:
    result = run(
        {},
        job("c", "failed", finished_at=F2),
        job("b", "done", finished_at=F1),
        job("a", "failed", finished_at=F2),
        job("z", "failed"),  # no finished_at: first
        job("r", "running", started_at=S2),
        alert_on_started=True,
    )
    assert [e.job.id for e in result.events] == ["z", "b", "r", "a", "c"]


def test_snapshot_keeps_an_unknown_terminal_state_as_other() -> None:
    original = snap(job(state="weird", finished_at=F1, started_at=S1))
    assert original.state_class is StateClass.OTHER
    # (its stored form round-trips in tests/test_storage_poller.py)


def test_event_json_carries_the_job() -> None:
    result = run({}, job(state="failed", finished_at=F1, message="boom <!channel>"))
    event = result.events[0]
    assert event.kind is EventKind.FAILED
    again = type(event).model_validate_json(event.model_dump_json())
    assert again == event
    assert again.event_id == event.event_id


# --- properties ----------------------------------------------------------------------------

TIMES = [T0 + timedelta(minutes=m) for m in (0, 10, 20, 30)]
STATES = ["queued", "running", "failed", "error", "done", "cancelled", "weird", "DONE"]

jobs_strategy = st.lists(
    st.builds(
        lambda job_id, state, finished, started: job(
            job_id, state, finished_at=finished, started_at=started
        ),
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from(STATES),
        st.none() | st.sampled_from(TIMES),
        st.none() | st.sampled_from(TIMES),
    ),
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(
    before=st.none() | jobs_strategy,
    listing=jobs_strategy,
    started=st.booleans(),
    later=st.sampled_from([timedelta(0), timedelta(seconds=15), timedelta(hours=3)]),
)
def test_diffing_the_same_listing_twice_yields_no_events(
    before: list[Job] | None, listing: list[Job], started: bool, later: timedelta
) -> None:
    previous = None
    if before is not None:
        previous = apply({}, run(None, *before))
    first = run(previous, *listing, alert_on_started=started)
    state = apply(previous, first)
    second = diff(
        state, listing, NOW + later, org_id=ORG, classifier=CLASSIFIER, alert_on_started=started
    )
    assert second.events == []
    listed = {j.id: j for j in listing}
    assert set(second.removals).isdisjoint(listed)
    for job_id, current in listed.items():
        assert state[job_id].state == current.state
        assert state[job_id].finished_at == current.finished_at


@settings(max_examples=150, deadline=None)
@given(before=jobs_strategy, listing=jobs_strategy, started=st.booleans())
def test_events_are_unique_and_ordered(
    before: list[Job], listing: list[Job], started: bool
) -> None:
    previous = apply({}, run(None, *before))
    result = run(previous, *listing, alert_on_started=started)
    ids = [e.event_id for e in result.events]
    assert len(ids) == len(set(ids))
    assert len({e.job.id for e in result.events}) == len(ids)
    assert result.events == sorted(
        result.events,
        key=lambda e: (
            (e.job.started_at if e.kind is EventKind.STARTED else e.job.finished_at)
            or datetime.min.replace(tzinfo=UTC),
            e.job.id,
        ),
    )


@settings(max_examples=150, deadline=None)
@given(listing=jobs_strategy, started=st.booleans())
def test_no_events_on_baseline_without_backfill(listing: list[Job], started: bool) -> None:
    result = run(None, *listing, alert_on_started=started)
    assert result.events == []
    assert result.baseline is True
    assert set(result.upserts) == {j.id for j in listing}


@settings(max_examples=100, deadline=None)
@given(listing=jobs_strategy)
def test_backfill_only_reports_terminal_jobs_inside_the_window(listing: list[Job]) -> None:
    window = timedelta(minutes=100)
    result = run(None, *listing, backfill=window)
    for event in result.events:
        assert event.kind is not EventKind.STARTED
        assert NOW - (event.job.finished_at or event.job.updated_at) <= window


@pytest.mark.parametrize(
    "change",
    [
        {"state": "error"},
        {"finished_at": F2.isoformat()},
        {"started_at": S2.isoformat()},
        {"updated_at": NOW.isoformat()},
    ],
)
def test_any_change_but_last_seen_is_written(change: dict[str, Any]) -> None:
    before = job(state="failed", finished_at=F1, started_at=S1)
    after = Job.model_validate(before.model_dump(mode="json") | change)
    result = run({"j1": snap(before, last_seen=NOW)}, after)
    assert result.upserts == {"j1": snap(after, last_seen=NOW)}


# --- the incremental diff computes what the reference diff did --------------------------------

snapshots_strategy = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e"]),
    st.builds(
        lambda j, ago: snap(j, last_seen=NOW - ago),
        jobs_strategy.filter(bool).map(lambda js: js[0]),
        st.sampled_from(
            [timedelta(0), timedelta(minutes=14), timedelta(minutes=15), timedelta(hours=2)]
        ),
    ),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(
    previous=st.none() | snapshots_strategy,
    listing=jobs_strategy,
    started=st.booleans(),
    backfill=st.sampled_from([timedelta(0), timedelta(hours=3)]),
    grace=st.sampled_from([timedelta(0), timedelta(minutes=30), timedelta(hours=1)]),
)
def test_the_incremental_diff_equals_the_reference_diff(
    previous: dict[str, JobSnapshot] | None,
    listing: list[Job],
    started: bool,
    backfill: timedelta,
    grace: timedelta,
) -> None:
    options: dict[str, Any] = {
        "org_id": ORG,
        "classifier": CLASSIFIER,
        "alert_on_started": started,
        "backfill": backfill,
        "vanish_grace": grace,
    }
    expected = reference_diff(previous, listing, NOW, **options)
    result = diff(previous, iter(listing), NOW, **options)  # one pass over the listing
    assert result.events == expected.events
    assert result.removals == expected.removals
    assert result.upserts == expected.upserts
    assert result.baseline == expected.baseline


# --- with hung-run detection on ------------------------------------------------------------

HUNG_TIMES = [NOW - timedelta(minutes=m) for m in (0, 10, 20, 150)]

hung_jobs_strategy = st.lists(
    st.builds(
        lambda job_id, state, started, updated, rows: job(
            job_id, state, started_at=started, updated_at=updated.isoformat(), rows_emitted=rows
        ),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["running", "queued", "failed", "done"]),
        st.none() | st.sampled_from([T0, S1]),
        st.sampled_from(HUNG_TIMES),
        st.sampled_from([0, 5]),
    ),
    max_size=6,
)


def _hung_snapshot(
    j: Job, ago: timedelta, progress: timedelta | None, stalled: bool, long_running: bool
) -> JobSnapshot:
    """A stored snapshot as the diff can leave one: only an active run has hung-run fields."""
    base = snap(j, last_seen=NOW - ago)
    if base.state_class is not StateClass.ACTIVE:
        return base
    return replace(
        base,
        progress_at=None if progress is None else (NOW - progress).replace(microsecond=0),
        stalled=stalled,
        long_running=long_running,
    )


hung_snapshots_strategy = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]),
    st.builds(
        _hung_snapshot,
        hung_jobs_strategy.filter(bool).map(lambda js: js[0]),
        st.sampled_from([timedelta(0), timedelta(minutes=1), timedelta(hours=2)]),
        st.none() | st.sampled_from([timedelta(0), timedelta(minutes=14), timedelta(minutes=16)]),
        st.booleans(),
        st.booleans(),
    ),
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(
    previous=st.none() | hung_snapshots_strategy,
    listing=hung_jobs_strategy,
    started=st.booleans(),
    stall=st.sampled_from([timedelta(0), timedelta(minutes=15)]),
    long_running=st.sampled_from([timedelta(0), timedelta(hours=2)]),
)
def test_hung_runs_in_the_incremental_diff_equal_the_reference(
    previous: dict[str, JobSnapshot] | None,
    listing: list[Job],
    started: bool,
    stall: timedelta,
    long_running: timedelta,
) -> None:
    options: dict[str, Any] = {
        "org_id": ORG,
        "classifier": CLASSIFIER,
        "alert_on_started": started,
        "stall_after": stall,
        "long_running_after": long_running,
    }
    expected = reference_diff(previous, listing, NOW, **options)
    result = diff(previous, iter(listing), NOW, **options)
    assert result.events == expected.events
    assert [e.since for e in result.events] == [e.since for e in expected.events]
    assert result.upserts == expected.upserts
    assert result.removals == expected.removals
