"""bot.alerts.poller: full cycles against real Redis (and fakeredis), racing replicas, the lease,
round trips, and run_forever's schedule, back-off and shutdown (with an injected clock)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.alerts.diff import DiffRules
from bot.alerts.poller import Poller, PollResult, outcome_of
from bot.app.metrics import Metrics
from bot.domain.events import JobEvent
from bot.domain.models import Job
from bot.domain.snapshot import JobSnapshot
from bot.domain.states import StateClassifier
from bot.timbal import (
    JobListing,
    TimbalAuthError,
    TimbalBadResponse,
    TimbalError,
    TimbalResponseTooLarge,
    TimbalUnavailable,
)
from storage.connection import Redis
from storage.heartbeat import last_poll
from storage.keys import Keys
from storage.lease import Lease
from storage.snapshot_codec import LegacySnapshot
from storage.snapshots import SnapshotStore
from tests.fakes import make_job
from tests.redis_backends import Backend, count_round_trips
from tests.replica_helpers import alive, die, identity

ORG = "org_p"
KEYS = Keys("tjb", ORG)
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


# --- doubles ----------------------------------------------------------------------------------


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class ListingTimbal:
    """An in-memory Timbal: a mutable list of job dicts; failures and hooks can be queued."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[BaseException] = field(default_factory=list)
    on_call: Callable[[], Any] | None = None
    calls: list[str | None] = field(default_factory=list)

    def upsert(self, job_id: str, **fields: Any) -> None:
        if job_id in self.jobs:
            self.jobs[job_id].update(fields)
        else:
            self.jobs[job_id] = make_job(job_id, created_at=T0.isoformat(), **fields)

    async def list_jobs(self, connector_id: str | None = None) -> list[Job]:
        self.calls.append(connector_id)
        if self.on_call is not None:
            hooked = self.on_call()
            if asyncio.iscoroutine(hooked):
                await hooked
        if self.failures:
            raise self.failures.pop(0)
        return [Job.model_validate(j) for j in self.jobs.values()]

    async def list_jobs_detailed(self, connector_id: str | None = None) -> JobListing:
        return JobListing(jobs=await self.list_jobs(connector_id), skipped=0)


class AlwaysLeader:
    """A lease double: every replica leads (to make replicas race on purpose)."""

    async def acquire_or_renew(self) -> bool:
        return True

    async def release(self) -> None:
        return None


@dataclass
class BrokenLease:
    error: BaseException

    async def acquire_or_renew(self) -> bool:
        raise self.error

    async def release(self) -> None:
        raise self.error


async def make_poller(
    r: Redis,
    timbal: ListingTimbal,
    *,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    holder: str = "replica-a",
    **kwargs: Any,
) -> Poller:
    """A poller whose replica is registered alive (only a live replica may take the lease)."""
    kwargs.setdefault("interval", 15.0)
    who = identity(holder)
    await alive(r, KEYS, who)
    return Poller(
        redis=r,
        timbal=timbal,
        keys=KEYS,
        classifier=StateClassifier(),
        org_id=ORG,
        metrics=metrics or Metrics(),
        identity=who,
        clock=clock or Clock(),
        **kwargs,
    )


def polls(metrics: Metrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("tjb_polls_total", {"outcome": outcome}) or 0.0


async def outbox_events(r: Redis) -> list[JobEvent]:
    raw: Any = await r.xrange(KEYS.outbox)
    assert all(set(fields) == {"event_id", "event"} for _, fields in raw)
    events = [JobEvent.model_validate_json(fields["event"]) for _, fields in raw]
    assert [fields["event_id"] for _, fields in raw] == [e.event_id for e in events]
    return events


# --- one cycle --------------------------------------------------------------------------------


async def test_baseline_posts_nothing(r: Redis, caplog: pytest.LogCaptureFixture) -> None:
    timbal = ListingTimbal()
    timbal.upsert("old-failure", state="failed", finished_at=(T0 - timedelta(hours=1)).isoformat())
    timbal.upsert("busy", state="running")
    metrics = Metrics()
    with caplog.at_level(logging.INFO, logger="bot.alerts.poller"):
        result = await (await make_poller(r, timbal, metrics=metrics)).run_once()
    assert result.baseline is True
    assert (result.jobs, result.events, result.enqueued, result.duplicates) == (2, 0, 0, 0)
    assert result.skipped_not_leader is False
    assert await r.xlen(KEYS.outbox) == 0
    assert set(await SnapshotStore(r, KEYS).load() or {}) == {"old-failure", "busy"}
    assert await last_poll(r, KEYS) == T0
    assert timbal.calls == [None]  # one listing for the whole org, no connector filter
    assert polls(metrics, "ok") == 1
    assert metrics.registry.get_sample_value("tjb_jobs_seen") == 2
    assert metrics.registry.get_sample_value("tjb_poll_duration_seconds_count") == 1
    [line] = [rec.getMessage() for rec in caplog.records if rec.name == "bot.alerts.poller"]
    assert line.startswith(
        f"poll org={ORG} jobs=2 events=0 enqueued=0 duplicates=0 removed=0 baseline=yes ms="
    )


async def test_queued_running_failed_gives_exactly_one_failed_entry(r: Redis) -> None:
    timbal, clock, metrics = ListingTimbal(), Clock(), Metrics()
    poller = await make_poller(r, timbal, clock=clock, metrics=metrics)
    await poller.run_once()  # baseline: no jobs yet
    timbal.upsert("j1", state="queued")
    assert (await poller.run_once()).events == 0
    clock.advance(seconds=15)
    timbal.upsert("j1", state="running", started_at=clock.now.isoformat())
    assert (await poller.run_once()).events == 0
    clock.advance(seconds=15)
    finished = clock.now - timedelta(seconds=3)
    timbal.upsert("j1", state="failed", finished_at=finished.isoformat(), message="disk <full>")
    result = await poller.run_once()
    assert (result.events, result.enqueued, result.duplicates) == (1, 1, 0)
    for _ in range(2):  # nothing changes: nothing more is enqueued
        clock.advance(seconds=15)
        assert (await poller.run_once()).events == 0
    [event] = await outbox_events(r)
    assert event.kind.value == "failed"
    assert event.org_id == ORG
    assert event.job == Job.model_validate(timbal.jobs["j1"])
    assert event.job.message == "disk <full>"
    assert event.detected_at == T0 + timedelta(seconds=30)
    assert event.event_id == f"{ORG}:j1:failed:{finished.isoformat()}"
    assert metrics.registry.get_sample_value("tjb_events_total", {"kind": "failed"}) == 1


async def test_a_rerun_that_fails_again_alerts_again(r: Redis) -> None:
    timbal, clock = ListingTimbal(), Clock()
    poller = await make_poller(r, timbal, clock=clock)
    timbal.upsert("j1", state="running")
    await poller.run_once()
    timbal.upsert("j1", state="failed", finished_at=(T0 + timedelta(seconds=10)).isoformat())
    clock.advance(seconds=15)
    await poller.run_once()
    timbal.upsert("j1", state="running", finished_at=None)
    clock.advance(seconds=15)
    await poller.run_once()
    timbal.upsert("j1", state="failed", finished_at=(T0 + timedelta(seconds=40)).isoformat())
    clock.advance(seconds=15)
    await poller.run_once()
    events = await outbox_events(r)
    assert [e.kind.value for e in events] == ["failed", "failed"]
    assert len({e.event_id for e in events}) == 2


async def test_backfill_and_started_reach_the_diff(r: Redis) -> None:
    timbal, clock = ListingTimbal(), Clock()
    timbal.upsert("recent", state="failed", finished_at=(T0 - timedelta(minutes=5)).isoformat())
    poller = await make_poller(
        r,
        timbal,
        clock=clock,
        rules=DiffRules(backfill=timedelta(minutes=10), alert_on_started=True),
    )
    assert (await poller.run_once()).enqueued == 1
    timbal.upsert("new", state="running", started_at=T0.isoformat())
    clock.advance(seconds=15)
    assert (await poller.run_once()).enqueued == 1
    assert [e.kind.value for e in await outbox_events(r)] == ["failed", "started"]


async def test_vanished_jobs_are_pruned_after_the_grace(r: Redis) -> None:
    timbal, clock = ListingTimbal(), Clock()
    poller = await make_poller(
        r, timbal, clock=clock, rules=DiffRules(vanish_grace=timedelta(hours=1))
    )
    timbal.upsert("stays", state="running")
    timbal.upsert("goes", state="done", finished_at=T0.isoformat())
    await poller.run_once()
    del timbal.jobs["goes"]
    clock.advance(minutes=30)
    await poller.run_once()
    assert "goes" in (await SnapshotStore(r, KEYS).load() or {})
    clock.advance(minutes=46)  # 1h16m since it was last listed: past grace + resolution
    await poller.run_once()
    assert set(await SnapshotStore(r, KEYS).load() or {}) == {"stays"}
    assert await r.xlen(KEYS.outbox) == 0


# --- replicas ---------------------------------------------------------------------------------


async def test_racing_replicas_enqueue_each_event_once(backend: Backend) -> None:
    timbal, clock = ListingTimbal(), Clock()
    for i in range(20):
        timbal.upsert(f"j{i}", state="running")
    await (await make_poller(backend.client(), timbal, clock=clock)).run_once()
    for i in range(20):
        timbal.upsert(f"j{i}", state="failed", finished_at=T0.isoformat())
    clock.advance(seconds=15)

    arrived: list[int] = []
    all_listed = asyncio.Event()

    async def together() -> None:  # every replica has its listing before any goes on
        arrived.append(1)
        if len(arrived) == 3:
            all_listed.set()
        await all_listed.wait()

    timbal.on_call = together
    replicas = [
        await make_poller(
            backend.client(), timbal, clock=clock, holder=f"r{n}", lease=AlwaysLeader()
        )
        for n in range(3)
    ]
    results = await asyncio.gather(*(p.run_once() for p in replicas))
    assert sum(res.enqueued for res in results) == 20
    assert sum(res.events for res in results) == 20 + sum(res.duplicates for res in results)
    events = await outbox_events(backend.client())
    assert sorted(e.job.id for e in events) == sorted(f"j{i}" for i in range(20))


async def test_a_replica_without_the_lease_does_not_poll(backend: Backend) -> None:
    timbal, metrics = ListingTimbal(), Metrics()
    leader = await make_poller(backend.client(), timbal, holder="a")
    follower = await make_poller(backend.client(), timbal, holder="b", metrics=metrics)
    assert (await leader.run_once()).skipped_not_leader is False
    calls = len(timbal.calls)
    result = await follower.run_once()
    assert result == PollResult(skipped_not_leader=True, ms=result.ms)
    assert len(timbal.calls) == calls
    assert polls(metrics, "not_leader") == 1
    assert polls(metrics, "ok") == 0


async def test_another_replica_takes_over_at_once_when_the_leader_dies(backend: Backend) -> None:
    timbal, clock = ListingTimbal(), Clock()
    timbal.upsert("j1", state="running")
    interval = 600.0  # lease TTL = 2.5 intervals: 25 minutes, which a takeover never waits for
    a = await make_poller(backend.client(), timbal, clock=clock, holder="a", interval=interval)
    b = await make_poller(backend.client(), timbal, clock=clock, holder="b", interval=interval)
    assert not (await a.run_once()).skipped_not_leader
    assert (await b.run_once()).skipped_not_leader
    timbal.upsert("j1", state="failed", finished_at=T0.isoformat())
    await die(backend.client(), KEYS, a._lease.identity)  # type: ignore[attr-defined]
    result = await b.run_once()  # a's heartbeat lapsed: b leads on its very next cycle
    assert not result.skipped_not_leader and result.enqueued == 1
    assert await b._lease.current_holder() == "b"  # type: ignore[attr-defined]


# --- round trips ------------------------------------------------------------------------------


async def test_round_trips_per_cycle_do_not_grow_with_jobs(
    r: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def trips_for(size: int) -> int:
        await r.flushdb()
        timbal, clock = ListingTimbal(), Clock()
        for i in range(size):
            timbal.upsert(f"j{i}", state="running")
        poller = await make_poller(r, timbal, clock=clock)
        await poller.run_once()  # baseline; the connection opens, the lease is taken
        await poller.run_once()  # the lease is renewed: every script is loaded now
        for i in range(size):
            timbal.upsert(f"j{i}", state="failed", finished_at=T0.isoformat())
        clock.advance(seconds=15)
        with monkeypatch.context() as patch:
            trips = count_round_trips(patch)
            result = await poller.run_once()
        assert result.enqueued == size
        return trips.count

    small, large = await trips_for(10), await trips_for(1000)
    assert small == large
    assert large <= 3  # lease, load (the snapshot's version), commit (with the heartbeat)


# --- the snapshot format before issue 11 ------------------------------------------------------


async def test_an_upgrade_from_the_old_snapshot_format_alerts_nothing_new(r: Redis) -> None:
    """Snapshots as the bot stored them before (JSON in one hash), of every kind of job: the
    first poll after the upgrade reads them, alerts nothing, and writes them over."""
    timbal, clock = ListingTimbal(), Clock()
    old_terminal = (T0 - timedelta(days=40)).isoformat()  # beyond the seen-events retention
    timbal.upsert("done-long-ago", state="succeeded", finished_at=old_terminal)
    timbal.upsert("failed", state="failed", finished_at=T0.isoformat(), started_at=T0.isoformat())
    timbal.upsert("running", state="running", started_at=T0.isoformat())
    timbal.upsert("queued", state="queued")
    classifier = StateClassifier()
    legacy = {}
    for job_id, raw in timbal.jobs.items():
        job = Job.model_validate(raw)
        snapshot = JobSnapshot.of(job, classifier.classify(job), T0 - timedelta(minutes=1))
        legacy[job_id] = LegacySnapshot.model_validate(snapshot, from_attributes=True)
    await r.set(KEYS.baseline, (T0 - timedelta(days=41)).isoformat())
    await r.hset(KEYS.snapshot, mapping={k: v.model_dump_json() for k, v in legacy.items()})

    poller = await make_poller(r, timbal, clock=clock, rules=DiffRules(alert_on_started=True))
    result = await poller.run_once()
    assert (result.baseline, result.events, result.enqueued) == (False, 0, 0)
    assert await r.xlen(KEYS.outbox) == 0
    stored = await SnapshotStore(r, KEYS).load()
    assert stored is not None
    assert {k: v.state for k, v in stored.items()} == {k: v.state for k, v in legacy.items()}
    timbal.upsert("running", state="failed", finished_at=T0.isoformat())
    clock.advance(seconds=15)
    assert (await poller.run_once()).enqueued == 1  # and it goes on alerting as before


# --- failures and metrics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (TimbalUnavailable("down"), "timbal_unavailable"),
        (TimbalResponseTooLarge(256 * 1024 * 1024), "timbal_too_large"),
        (TimbalAuthError("no", status=401), "timbal_auth"),
        (TimbalBadResponse("junk"), "timbal_bad_response"),
        (TimbalError("other"), "timbal_error"),
    ],
)
async def test_a_timbal_failure_is_counted_and_raised(
    r: Redis, error: TimbalError, outcome: str
) -> None:
    timbal, metrics = ListingTimbal(failures=[error]), Metrics()
    with pytest.raises(type(error)):
        await (await make_poller(r, timbal, metrics=metrics)).run_once()
    assert polls(metrics, outcome) == 1
    assert await SnapshotStore(r, KEYS).load() is None  # nothing was committed
    assert await last_poll(r, KEYS) is None


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (RedisConnectionError("refused"), "redis_unavailable"),
        (RedisTimeoutError("slow"), "redis_unavailable"),
        (ResponseError("OOM command not allowed"), "redis_error"),
    ],
)
def test_redis_failures_have_their_own_outcomes(error: Exception, outcome: str) -> None:
    assert outcome_of(error) == outcome


async def test_a_redis_failure_is_counted_and_raised(r: Redis) -> None:
    timbal, metrics = ListingTimbal(), Metrics()
    poller = await make_poller(
        r, timbal, metrics=metrics, lease=BrokenLease(RedisConnectionError("x"))
    )
    with pytest.raises(RedisConnectionError):
        await poller.run_once()
    assert polls(metrics, "redis_unavailable") == 1
    assert timbal.calls == []


async def test_interval_must_be_positive(r: Redis) -> None:
    with pytest.raises(ValueError, match="interval"):
        await make_poller(r, ListingTimbal(), interval=0)


@pytest.mark.parametrize(
    ("interval", "failures", "expected"),
    [(15, 1, 15), (15, 2, 30), (15, 3, 60), (15, 5, 240), (15, 6, 300), (15, 60, 300)],
)
async def test_backoff_doubles_up_to_a_cap(
    r: Redis, interval: float, failures: int, expected: float
) -> None:
    poller = await make_poller(r, ListingTimbal(), interval=interval)
    assert poller.backoff(failures) == expected


async def test_backoff_never_polls_faster_than_the_interval(r: Redis) -> None:
    poller = await make_poller(r, ListingTimbal(), interval=600)
    assert poller.backoff(3) == 600


# --- run_forever ------------------------------------------------------------------------------


@dataclass
class FakeTime:
    """Monotonic time and a `wait` that advances it instead of sleeping; stops after `waits`."""

    waits: int
    t: float = 0.0
    waited: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.t

    async def wait(self, stop: asyncio.Event, seconds: float) -> None:
        self.waited.append(round(seconds, 6))
        self.t += seconds
        if len(self.waited) >= self.waits:
            stop.set()


def timed_timbal(fake: FakeTime, durations: list[float], **kwargs: Any) -> ListingTimbal:
    """A Timbal whose n-th listing takes durations[n] seconds of fake time."""
    timbal = ListingTimbal(**kwargs)

    def tick() -> None:
        fake.starts.append(fake.t)
        fake.t += durations[len(fake.starts) - 1] if len(fake.starts) <= len(durations) else 0

    timbal.on_call = tick
    return timbal


async def test_run_forever_keeps_a_drift_free_grid(r: Redis) -> None:
    fake = FakeTime(waits=4)
    timbal = timed_timbal(fake, [3, 3, 3, 3, 3])
    poller = await make_poller(r, timbal, interval=10, monotonic=fake.monotonic, wait=fake.wait)
    await poller.run_forever(asyncio.Event())
    assert fake.starts == [0, 10, 20, 30]
    assert fake.waited == [7, 7, 7, 7]


async def test_run_forever_skips_ticks_an_overrunning_cycle_missed(r: Redis) -> None:
    fake = FakeTime(waits=3)
    timbal = timed_timbal(fake, [1, 25, 1, 1])
    poller = await make_poller(r, timbal, interval=10, monotonic=fake.monotonic, wait=fake.wait)
    await poller.run_forever(asyncio.Event())
    assert fake.starts == [0, 10, 40]  # the ticks at 20 and 30 were skipped, not bunched up
    assert fake.waited == [9, 5, 9]


async def test_run_forever_backs_off_while_timbal_is_unavailable(r: Redis) -> None:
    fake = FakeTime(waits=6)
    failures: list[BaseException] = [TimbalUnavailable("503") for _ in range(4)]
    timbal = timed_timbal(fake, [], failures=failures)
    metrics = Metrics()
    poller = await make_poller(
        r, timbal, interval=10, metrics=metrics, monotonic=fake.monotonic, wait=fake.wait
    )
    await poller.run_forever(asyncio.Event())
    assert fake.waited == [10, 20, 40, 80, 10, 10]  # back on the interval once it answers
    assert polls(metrics, "timbal_unavailable") == 4
    assert polls(metrics, "ok") == 2


async def test_run_forever_backs_off_while_redis_is_down(r: Redis) -> None:
    fake = FakeTime(waits=3)
    metrics = Metrics()
    poller = await make_poller(
        r,
        ListingTimbal(),
        interval=10,
        metrics=metrics,
        lease=BrokenLease(RedisConnectionError("refused")),
        monotonic=fake.monotonic,
        wait=fake.wait,
    )
    await poller.run_forever(asyncio.Event())  # the failing release on the way out is ignored
    assert fake.waited == [10, 20, 40]
    assert polls(metrics, "redis_unavailable") == 3


async def test_run_forever_lets_a_bug_through(r: Redis) -> None:
    fake = FakeTime(waits=10)
    timbal = ListingTimbal(failures=[ValueError("a bug, not an outage")])
    poller = await make_poller(r, timbal, monotonic=fake.monotonic, wait=fake.wait)
    with pytest.raises(ValueError, match="a bug"):
        await poller.run_forever(asyncio.Event())
    assert fake.waited == []


async def test_stop_during_a_cycle_ends_the_loop_without_waiting(r: Redis) -> None:
    fake = FakeTime(waits=10)
    stop = asyncio.Event()
    timbal = ListingTimbal(on_call=stop.set)
    poller = await make_poller(r, timbal, monotonic=fake.monotonic, wait=fake.wait)
    await poller.run_forever(stop)
    assert fake.waited == []
    assert len(timbal.calls) == 1


async def test_run_forever_stops_promptly_and_gives_the_lease_up(r: Redis) -> None:
    timbal = ListingTimbal()
    poller = await make_poller(r, timbal, interval=3600)  # the real wait: an hour between cycles
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run_forever(stop))
    deadline = time.monotonic() + 5
    while await last_poll(r, KEYS) is None:
        assert time.monotonic() < deadline, "the first cycle never ran"
        await asyncio.sleep(0.01)
    lease = Lease(r, KEYS, key=KEYS.poller_lease, identity=identity("other"), ttl=1)
    assert await lease.current_holder() == "replica-a"
    stop.set()
    await asyncio.wait_for(task, timeout=5)  # not an hour
    assert await lease.current_holder() is None
    assert len(timbal.calls) == 1
