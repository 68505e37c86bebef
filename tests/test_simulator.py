"""The demo's simulated org: valid JobViews, deterministic, jobs that move and end."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bot.domain.models import Job
from bot.domain.states import StateClass, StateClassifier
from bot.sim import failures
from bot.sim.simulator import (
    DEFAULT_CONNECTORS,
    MEASURABLE_AFTER,
    PROGRESS_EVERY,
    Connector,
    SimulatedOrg,
)
from bot.sim.timbal_api import FakeTimbal

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ACTIVE = {"queued", "running"}
CLASSIFY = StateClassifier()


def org_at(seed: int = 7, **kwargs: Any) -> SimulatedOrg:
    return SimulatedOrg(seed=seed, clock=lambda: T0, **kwargs)


def sim(org: SimulatedOrg, seconds: float) -> datetime:
    """The caller's-clock instant `seconds` simulated seconds after the start."""
    return org.at(seconds)


def grid(org: SimulatedOrg, until: float, step: float) -> list[tuple[datetime, list[Job]]]:
    out = []
    t = -60.0
    while t <= until:
        now = sim(org, t)
        out.append((now, [Job.model_validate(j) for j in org.jobs_at(now)]))
        t += step
    return out


# --- determinism ------------------------------------------------------------------------------
def test_same_seed_and_clock_give_the_same_listing() -> None:
    a, b = org_at(3), org_at(3)
    for seconds in (0, 95, 600, 3600):
        assert a.jobs_at(sim(a, seconds)) == b.jobs_at(sim(b, seconds))
    assert a.jobs() == b.jobs()


def test_other_seed_gives_other_jobs() -> None:
    a, b = org_at(3), org_at(4)
    assert {j["id"] for j in a.jobs()}.isdisjoint({j["id"] for j in b.jobs()})


def test_listing_does_not_depend_on_how_often_it_was_asked() -> None:
    often, once = org_at(11), org_at(11)
    for seconds in range(0, 7200, 30):
        often.jobs_at(sim(often, seconds))
    assert often.jobs_at(sim(often, 7200)) == once.jobs_at(sim(once, 7200))
    # and asking about the past after the future changes nothing either
    assert often.jobs_at(sim(often, 300)) == once.jobs_at(sim(once, 300))


def test_jobs_follows_the_clock() -> None:
    now = [T0]
    org = SimulatedOrg(seed=5, clock=lambda: now[0], speed=60)
    assert org.origin == T0
    now[0] = T0 + timedelta(seconds=30)
    assert org.jobs() == org.jobs_at(T0 + timedelta(seconds=30))
    assert org.sim_seconds(now[0]) == 1800


# --- every job is a valid JobView, with nulls where the spec puts them ---------------------------
@pytest.mark.parametrize("seed", [0, 1, 7, 42])
def test_every_job_is_a_valid_job_view(seed: int) -> None:
    org = org_at(seed)
    for now, jobs in grid(org, until=4 * 3600, step=97):
        assert len({j.id for j in jobs}) == len(jobs)
        assert len(jobs) <= org.keep * len(org.connector_ids)
        assert [j.created_at for j in jobs] == sorted((j.created_at for j in jobs), reverse=True)
        for job in jobs:
            check_job_view(job, now, org.speed)


def check_job_view(job: Job, now: datetime, speed: float) -> None:
    for stamp in (job.created_at, job.updated_at, job.started_at, job.finished_at):
        assert stamp is None or stamp <= now, "a timestamp in the future"
    assert job.created_at <= job.updated_at
    assert job.rows_emitted >= 0
    if job.state == "queued":
        assert job.started_at is None and job.duration_ms is None and job.rows_emitted == 0
        assert job.rows_per_sec is None
    if job.state in ACTIVE:
        assert job.finished_at is None and job.message is None
        assert CLASSIFY.classify(job) is StateClass.ACTIVE
    else:
        assert job.finished_at is not None and job.updated_at == job.finished_at
        assert CLASSIFY.classify(job).terminal and CLASSIFY.classify(job) is not StateClass.OTHER
    if job.started_at is None:
        assert job.duration_ms is None and job.rows_per_sec is None and job.rows_emitted == 0
    else:
        assert job.created_at <= job.started_at
        assert job.duration_ms is not None
        end = job.finished_at or now
        # durations are simulated: the caller's clock span times the speed
        expected = (end - job.started_at).total_seconds() * speed * 1000
        assert job.duration_ms == pytest.approx(expected, abs=2)
    if CLASSIFY.classify(job) is StateClass.FAILED:
        assert job.message and job.message.strip()
    if job.state == "succeeded":
        assert job.message is None


def test_rows_per_sec_is_null_until_measurable_then_plausible() -> None:
    org = org_at(7)
    seen: dict[str, list[Job]] = defaultdict(list)
    for _, jobs in grid(org, until=1800, step=1):
        for job in jobs:
            seen[job.id].append(job)
    rates = [
        [j.rows_per_sec for j in jobs if j.state == "running"]
        for jobs in seen.values()
        if jobs[0].state == "queued"
        and jobs[-1].state != "queued"
        # long enough to be measured (a run may fail a second after it started)
        and (jobs[-1].duration_ms or 0) >= 2 * (MEASURABLE_AFTER + PROGRESS_EVERY) * 1000
    ]
    assert rates, "no run seen from its start"
    for series in rates:
        assert series[0] is None
        measured = [r for r in series if r is not None]
        assert measured, "a run long enough is measured"
        assert all(r > 0 for r in measured)


# --- lifecycles -------------------------------------------------------------------------------
def test_states_progress_queued_running_terminal() -> None:
    org = org_at(21)
    history: dict[str, list[Job]] = defaultdict(list)
    for _, jobs in grid(org, until=2 * 3600, step=5):
        for job in jobs:
            history[job.id].append(job)
    order = {"queued": 0, "running": 1}
    went_through = set()
    for seen in history.values():
        ranks = [order.get(j.state, 2) for j in seen]
        assert ranks == sorted(ranks), [j.state for j in seen]
        terminal = {j.state for j in seen if j.state not in ACTIVE}
        assert len(terminal) <= 1
        finished = {j.finished_at for j in seen if j.finished_at is not None}
        assert len(finished) <= 1, "finished_at never moves"
        rows = [j.rows_emitted for j in seen]
        assert rows == sorted(rows)
        assert len({(j.created_at, j.connector_id, j.sync_id, j.mode) for j in seen}) == 1
        went_through.add(tuple(dict.fromkeys(j.state for j in seen)))
    assert ("queued", "running", "succeeded") in went_through
    assert any(
        path[:2] == ("queued", "running") and path[-1] != "succeeded" for path in went_through
    )


def test_live_duration_grows_with_the_clock() -> None:
    org = org_at(7)
    first = {j["id"]: j for j in org.jobs_at(sim(org, 10)) if j["state"] == "running"}
    later = {j["id"]: j for j in org.jobs_at(sim(org, 40)) if j["state"] == "running"}
    both = first.keys() & later.keys()
    assert both
    for job_id in both:
        assert later[job_id]["duration_ms"] - first[job_id]["duration_ms"] == pytest.approx(
            30_000, abs=2
        )
        assert later[job_id]["rows_emitted"] > first[job_id]["rows_emitted"]


@pytest.mark.parametrize("seed", range(10))
def test_a_failure_and_a_success_soon_after_the_start(seed: int) -> None:
    org = org_at(seed)
    ended: dict[str, StateClass] = {}
    for _, jobs in grid(org, until=8 * 60, step=5):
        for job in jobs:
            if job.finished_at is not None and job.finished_at > T0:
                ended[job.id] = CLASSIFY.classify(job)
    assert StateClass.FAILED in ended.values()
    assert StateClass.SUCCEEDED in ended.values()


def test_opening_runs_are_live_at_the_start_and_end_one_after_another() -> None:
    org = org_at(7)
    at_start = [j for j in org.jobs_at(T0) if j["state"] in ACTIVE]
    assert {j["connector_id"] for j in at_start} == set(org.connector_ids)
    later = {j["id"]: j for j in org.jobs_at(sim(org, 10 * 60))}
    ends = sorted(later[j["id"]]["finished_at"] for j in at_start)
    assert len(set(ends)) == len(ends), "not all at once"
    assert all(T0.isoformat() < end for end in ends)


def test_keeps_producing_new_runs_and_bounds_the_listing() -> None:
    org = org_at(7, keep=5)
    late = sim(org, 12 * 3600)
    jobs = [Job.model_validate(j) for j in org.jobs_at(late)]
    assert len(jobs) == 5 * len(org.connector_ids)
    recent = late - timedelta(seconds=3600 / org.speed)
    assert {j.connector_id for j in jobs if j.created_at > recent} == set(org.connector_ids)


def test_failure_messages_are_realistic_and_need_escaping() -> None:
    org = org_at(7)
    messages = {
        j.connector_id: j.message
        for _, jobs in grid(org, until=6 * 3600, step=60)
        for j in jobs
        if CLASSIFY.classify(j) is StateClass.FAILED and j.message
    }
    assert set(messages) == set(org.connector_ids)
    opening = {j["id"] for j in org.jobs_at(T0) if j["state"] in ACTIVE}
    at_start = {j["connector_id"]: j for j in org.jobs_at(sim(org, 8 * 60)) if j["id"] in opening}
    hubspot = at_start["hubspot-crm"]["message"]
    assert hubspot.count("\n") > 20 and len(hubspot) > 3000, "a long stack trace"
    assert "ARRAY<TEXT>" in hubspot and "&" in hubspot
    assert "429" in at_start["stripe-payments"]["message"]


def test_history_precedes_the_start() -> None:
    org = org_at(7, history_seconds=2 * 3600)
    before = [Job.model_validate(j) for j in org.jobs_at(T0) if j["finished_at"] is not None]
    assert len(before) >= len(org.connector_ids)
    assert all(j.finished_at is not None and j.finished_at < T0 for j in before)
    assert not [j for j in org_at(7, history_seconds=0).jobs_at(T0) if j["finished_at"]]


def test_custom_connectors_without_a_staged_opening() -> None:
    quiet = Connector(
        "mysql-inventory", "kb_ops", "inventory.items", 300, (30, 60), (10, 20), 0.5,
        failures.POSTGRES,
    )  # fmt: skip
    org = SimulatedOrg(seed=1, clock=lambda: T0, connectors=[quiet], speed=10)
    assert org.connector_ids == ["mysql-inventory"]
    for now, jobs in grid(org, until=3600, step=13):
        for job in jobs:
            assert job.connector_id == "mysql-inventory"
            check_job_view(job, now, 10)


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"speed": 0}, "speed"),
        ({"speed": -5}, "speed"),
        ({"speed": float("nan")}, "speed"),
        ({"connectors": []}, "at least one connector"),
        ({"connectors": [DEFAULT_CONNECTORS[0]] * 2}, "unique"),
        ({"keep": 0}, "keep"),
        ({"history_seconds": -1}, "history_seconds"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        org_at(**kwargs)


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        SimulatedOrg(seed=1, clock=lambda: datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"every": 0}, "every"),
        ({"run_seconds": (60, 30)}, "run_seconds"),
        ({"run_seconds": (0, 30)}, "run_seconds"),
        ({"rows_per_sec": (-1, 5)}, "rows_per_sec"),
        ({"failure_rate": 0.9, "cancel_rate": 0.2}, "add up"),
        ({"failure_rate": -0.1}, "failure_rate"),
        ({"failures": ()}, "failure kinds"),
        ({"opening": "exploded"}, "opening"),
    ],
)
def test_bad_connectors_are_refused(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(DEFAULT_CONNECTORS[0], **change)


# --- behind the fake API, as the demo runs it -----------------------------------------------
async def test_plugs_into_fake_timbal_as_source() -> None:
    now = [T0]
    org = SimulatedOrg(seed=7, clock=lambda: now[0])
    fake = await FakeTimbal(api_key="k", org_id="org_demo", source=org.jobs).start()
    try:
        async with httpx.AsyncClient(base_url=fake.base_url) as client:
            headers = {"Authorization": "Bearer k"}
            url = "/orgs/org_demo/connectors/jobs"
            listing = (await client.get(url, headers=headers)).json()["jobs"]
            assert listing == org.jobs_at(T0)
            now[0] = T0 + timedelta(seconds=8)
            only = await client.get(url, headers=headers, params={"connector_id": "s3-events"})
            jobs = [Job.model_validate(j) for j in only.json()["jobs"]]
    finally:
        await fake.stop()
    assert jobs and {j.connector_id for j in jobs} == {"s3-events"}
    assert max(j.updated_at for j in jobs) > T0, "the clock moved the listing on"
