"""The poller: on the replica holding the org's lease, list jobs, diff, commit, every interval.

One cycle (`run_once`): renew or take the lease (a replica without it returns at once) ->
`SnapshotStore.load()` (one round trip while the snapshot this poller holds is current) ->
the listing (one HTTP request for the whole org), each job handed to the pure `Differ` as it
is parsed, so only the changes are kept -> `Outbox.commit()` (one atomic script, which also
records the heartbeat). Three round trips in all, four after a takeover, whatever the size.
It logs one line:
`poll org=x jobs=120 events=2 enqueued=2 duplicates=0 removed=0 baseline=no ms=41 skipped=0`
(`skipped`: items of Timbal's answer that could not be read, each logged on its own).

`run_forever(stop)` runs cycles on a fixed grid (tick k at start + k * interval, so work time
does not make the schedule drift; ticks missed by a slow cycle are skipped, not bunched up),
backs off exponentially (capped) while Timbal or Redis fail, and returns as soon as `stop` is
set, giving the lease up so another replica takes over without waiting for the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.alerts.diff import Differ, DiffRules
from bot.app.metrics import Metrics
from bot.backoff import backoff
from bot.domain.snapshot import DiffResult
from bot.domain.states import StateClassifier
from bot.timbal import (
    JobsSource,
    TimbalAuthError,
    TimbalBadResponse,
    TimbalError,
    TimbalResponseTooLarge,
    TimbalUnavailable,
    scan_jobs,
)
from storage.connection import Redis
from storage.heartbeat import HEARTBEAT_TTL
from storage.keys import Keys
from storage.lease import LEASE_TTL_INTERVALS, Lease
from storage.ops import OpsState
from storage.outbox import CommitResult, Outbox
from storage.replicas import Identity
from storage.snapshots import SnapshotStore

log = logging.getLogger(__name__)

BACKOFF_CAP_SECONDS = 300.0
RECOVERABLE: tuple[type[Exception], ...] = (TimbalError, RedisError)


class LeaseLike(Protocol):
    async def acquire_or_renew(self) -> bool: ...
    async def release(self) -> None: ...


Wait = Callable[[asyncio.Event, float], Awaitable[None]]


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))


@dataclass(frozen=True)
class PollResult:
    jobs: int = 0
    events: int = 0
    enqueued: int = 0
    duplicates: int = 0
    baseline: bool = False
    skipped_not_leader: bool = False
    ms: float = 0.0


def outcome_of(exc: BaseException) -> str:
    """The `outcome` label a failed cycle is counted under."""
    if isinstance(exc, TimbalAuthError):
        return "timbal_auth"
    if isinstance(exc, TimbalUnavailable):
        return "timbal_unavailable"
    if isinstance(exc, TimbalResponseTooLarge):  # an ops problem of its own: raise the ceiling
        return "timbal_too_large"
    if isinstance(exc, TimbalBadResponse):
        return "timbal_bad_response"
    if isinstance(exc, TimbalError):
        return "timbal_error"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return "redis_unavailable"
    return "redis_error"


@dataclass(frozen=True)
class Plan:
    jobs: int  # jobs in the listing
    changes: DiffResult
    now: datetime
    skipped: int = 0  # items of Timbal's answer that could not be read (each logged)
    size: int = 0  # bytes of Timbal's answer


class Poller:
    def __init__(
        self,
        *,
        redis: Redis,
        timbal: JobsSource,
        keys: Keys,
        classifier: StateClassifier,
        org_id: str,
        interval: float,
        metrics: Metrics,
        identity: Identity,
        rules: DiffRules = DiffRules(),  # noqa: B008 - a frozen value
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease: LeaseLike | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wait: Wait = wait_or_stop,
    ) -> None:
        if interval <= 0:
            raise ValueError("the poll interval must be positive")
        self.interval = interval
        self.org_id = org_id
        self._redis = redis
        self._timbal = timbal
        self._keys = keys
        self._classifier = classifier
        self._metrics = metrics
        self._rules = rules
        self._clock = clock
        self._monotonic = monotonic
        self._wait = wait
        self._lease: LeaseLike = lease or Lease(
            redis,
            keys,
            key=keys.poller_lease,
            identity=identity,
            ttl=LEASE_TTL_INTERVALS * interval,
        )
        self._snapshots = SnapshotStore(redis, keys)
        self._ops = OpsState(redis, keys)
        self._outbox = Outbox(redis, keys, snapshots=self._snapshots)

    async def run_once(self) -> PollResult:
        """One cycle; raises TimbalError / RedisError (counted) for the caller to back off."""
        started = self._monotonic()
        try:
            result = await self._cycle(started)
        except RECOVERABLE as exc:
            self._metrics.polls.labels(outcome=outcome_of(exc)).inc()
            raise
        self._metrics.polls.labels(
            outcome="not_leader" if result.skipped_not_leader else "ok"
        ).inc()
        return result

    async def plan(self) -> Plan:
        """Load the snapshot, then diff the listing against it as it streams: what a cycle
        would commit."""
        previous = await self._snapshots.load()
        now = self._clock()

        def differ() -> Differ:  # a fresh one for each attempt of the request
            return Differ(
                previous,
                now,
                org_id=self.org_id,
                classifier=self._classifier,
                rules=self._rules,
            )

        scan = await scan_jobs(self._timbal, differ)
        return Plan(
            jobs=scan.jobs,
            changes=scan.sink.result(),
            now=now,
            skipped=scan.skipped,
            size=scan.size,
        )

    async def commit(self, plan: Plan) -> CommitResult:
        """Snapshot, events and heartbeat in one atomic step (idempotent by event id)."""
        return await self._outbox.commit(plan.changes, plan.now, heartbeat=HEARTBEAT_TTL)

    async def _cycle(self, started: float) -> PollResult:
        if not await self._lease.acquire_or_renew():
            log.debug("poll org=%s skipped: another replica holds the lease", self.org_id)
            return PollResult(skipped_not_leader=True, ms=self._ms_since(started))
        plan = await self.plan()
        jobs, changes = plan.jobs, plan.changes
        committed = await self.commit(plan)

        enqueued = set(committed.enqueued)
        for event in changes.events:
            if event.event_id in enqueued:
                self._metrics.events.labels(kind=event.kind.value).inc()
        self._metrics.jobs_seen.set(jobs)
        self._metrics.listing_bytes.set(plan.size)
        ms = self._ms_since(started)
        self._metrics.poll_duration.observe(ms / 1000)
        log.info(
            "poll org=%s jobs=%d events=%d enqueued=%d duplicates=%d removed=%d baseline=%s"
            " ms=%.0f skipped=%d",
            self.org_id,
            jobs,
            len(changes.events),
            len(committed.enqueued),
            committed.duplicates,
            len(changes.removals),
            "yes" if changes.baseline else "no",
            ms,
            plan.skipped,
        )
        return PollResult(
            jobs=jobs,
            events=len(changes.events),
            enqueued=len(committed.enqueued),
            duplicates=committed.duplicates,
            baseline=changes.baseline,
            ms=ms,
        )

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Poll on a drift-free grid until `stop` is set; back off while dependencies fail."""
        failures = 0
        next_tick = self._monotonic()
        try:
            while not stop.is_set():
                scheduled = next_tick
                try:
                    await self.run_once()
                    failures = 0
                    step = self.interval
                except RECOVERABLE as exc:
                    failures += 1
                    step = self.backoff(failures)
                    if isinstance(exc, TimbalError):  # counted for the ops watch
                        with contextlib.suppress(RedisError):
                            await self._ops.poll_failed(f"{outcome_of(exc)}: {exc}")
                    log.warning(
                        "poll org=%s failed outcome=%s error=%s: %s retry_in=%.0fs",
                        self.org_id,
                        outcome_of(exc),
                        type(exc).__name__,
                        exc,
                        step,
                    )
                now = self._monotonic()
                next_tick = scheduled + step
                if next_tick <= now:  # the cycle overran: skip the ticks it missed
                    next_tick += (math.floor((now - next_tick) / self.interval) + 1) * self.interval
                if stop.is_set():
                    break
                await self._wait(stop, next_tick - now)
        finally:
            with contextlib.suppress(RedisError):
                await self._lease.release()

    def backoff(self, failures: int) -> float:
        """Seconds before the next try after `failures` failed cycles in a row: doubling from
        the interval, capped (no jitter: only the lease holder polls)."""
        return backoff(failures, base=self.interval, cap=max(BACKOFF_CAP_SECONDS, self.interval))

    def _ms_since(self, started: float) -> float:
        return (self._monotonic() - started) * 1000
