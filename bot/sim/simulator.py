"""A simulated Timbal organisation for `timbal-jobs-bot demo`: connectors whose jobs queue, run,
emit rows, then succeed, fail with realistic messages, or get cancelled, on a fast clock.

`SimulatedOrg.jobs()` returns JobView dicts (as `GET /orgs/{org_id}/connectors/jobs` would), so
it plugs into the fake API as `FakeTimbal(source=org.jobs)`. Nothing is stored but the plan:
each connector's runs are drawn one after another from a random stream seeded by (seed,
connector), and a job's state is computed from the clock, so the same seed and the same clock
readings give the same listing, however often and whenever it is asked.

Two clocks. Timestamps (`created_at`, `started_at`, `finished_at`, `updated_at`) are on the
caller's clock, so they are never in the future for the bot that reads them. Durations and
throughput are simulated: at `speed=60` a ten-minute run takes ten real seconds and reports
`duration_ms` of ten minutes.

The opening is staged: every connector has a run in progress when the simulation starts, and
it ends within a few simulated minutes with the connector's `opening` outcome, so a newcomer
sees failures and successes within seconds. After that outcomes are drawn at each
connector's rates. A few hours of history precede the start, so `/jobs` is never empty.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.sim import failures
from bot.sim.failures import FailureKind

PROGRESS_EVERY = 5.0  # simulated seconds between two progress reports of a running job
MEASURABLE_AFTER = 5.0  # rows_per_sec stays null until a run has this much behind it
OPENING_FIRST = 120.0  # simulated seconds from the start to the end of the first opening run
OPENING_STEP = 75.0


@dataclass(frozen=True, slots=True)
class Connector:
    """One connector of the simulated org and how its runs behave (times in simulated s)."""

    id: str
    kb_uid: str
    dest_table: str
    every: float  # cadence: seconds between two scheduled runs
    run_seconds: tuple[float, float]  # planned run time of an incremental run
    rows_per_sec: tuple[float, float]
    failure_rate: float
    failures: tuple[FailureKind, ...]
    cancel_rate: float = 0.03
    opening: str | None = None  # "succeeded", "failed", "cancelled"; None: drawn as usual
    then: tuple[str, ...] = ()  # the outcomes of the runs after the opening, before the draws

    def __post_init__(self) -> None:
        problems = []
        if not self.every > 0:
            problems.append("every must be positive")
        if not 0 < self.run_seconds[0] <= self.run_seconds[1]:
            problems.append("run_seconds must be an increasing pair of positive numbers")
        if not 0 <= self.rows_per_sec[0] <= self.rows_per_sec[1]:
            problems.append("rows_per_sec must be an increasing pair of numbers >= 0")
        if min(self.failure_rate, self.cancel_rate) < 0 or self.failure_rate + self.cancel_rate > 1:
            problems.append("failure_rate and cancel_rate must be >= 0 and add up to <= 1")
        if not self.failures and (self.failure_rate > 0 or self.opening == "failed"):
            problems.append("a connector that can fail needs failure kinds")
        if self.opening not in (None, "succeeded", "failed", "cancelled"):
            problems.append(f"opening must be succeeded, failed or cancelled, not {self.opening!r}")
        if any(o not in ("succeeded", "failed", "cancelled") for o in self.then):
            problems.append("then holds succeeded, failed or cancelled outcomes only")
        if not self.failures and "failed" in self.then:
            problems.append("a connector that can fail needs failure kinds")
        if problems:
            raise ValueError(f"connector {self.id!r}: " + "; ".join(problems))


DEFAULT_CONNECTORS: tuple[Connector, ...] = (
    Connector(
        "postgres-orders", "kb_sales", "public.orders", 15 * 60, (90, 300), (800, 2500),
        0.2, failures.POSTGRES, opening="succeeded",
    ),
    # An incident the demo tells whole: fails, fails again (into the card's thread), recovers.
    Connector(
        "stripe-payments", "kb_finance", "stripe.charges", 10 * 60, (60, 150), (40, 120),
        0.3, failures.STRIPE, opening="failed", then=("failed", "succeeded"),
    ),
    Connector(
        "hubspot-crm", "kb_sales", "hubspot.contacts", 20 * 60, (60, 240), (100, 300),
        0.25, failures.HUBSPOT, opening="failed",
    ),
    Connector(
        "s3-events", "kb_product", "events.clickstream", 10 * 60, (45, 180), (5000, 20000),
        0.15, failures.S3, opening="succeeded",
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Run:
    """One planned run, on the simulated timeline (seconds from the start)."""

    id: str
    connector: Connector
    mode: str
    sync_id: str | None
    created: float
    started: float | None  # None: cancelled while still queued
    ended: float
    state: str  # the terminal state
    rate: float  # rows per second while running
    message: str | None

    def rows_at(self, t: float) -> int:
        if self.started is None or t <= self.started:
            return 0
        elapsed = min(t, self.ended) - self.started
        if t < self.ended:  # live: as of the last progress report
            elapsed = elapsed // PROGRESS_EVERY * PROGRESS_EVERY
        return int(self.rate * elapsed)


@dataclass
class _Plan:
    connector: Connector
    rng: random.Random
    runs: list[Run] = field(default_factory=list)
    scripted: int = 0  # outcomes of `Connector.then` used so far


class SimulatedOrg:
    """A Timbal org that lives on a fast clock. See the module docstring."""

    def __init__(
        self,
        *,
        seed: int,
        clock: Callable[[], datetime],
        speed: float = 60.0,
        connectors: Sequence[Connector] = DEFAULT_CONNECTORS,
        history_seconds: float = 3 * 3600.0,
        keep: int = 20,
        origin: datetime | None = None,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, not {speed!r}")
        if not connectors:
            raise ValueError("a simulated org needs at least one connector")
        ids = [c.id for c in connectors]
        if len(set(ids)) != len(ids):
            raise ValueError(f"connector ids must be unique: {ids}")
        if keep < 1 or history_seconds < 0:
            raise ValueError("keep must be at least 1 and history_seconds not negative")
        self.seed = seed
        self.speed = speed
        self.keep = keep
        self._clock = clock
        self.origin = origin if origin is not None else clock()
        if self.origin.tzinfo is None:
            raise ValueError("the clock must give aware datetimes")
        self._plans = [
            self._open(_Plan(c, random.Random(f"{seed}:{c.id}")), i, history_seconds)
            for i, c in enumerate(connectors)
        ]

    @property
    def connector_ids(self) -> list[str]:
        return [p.connector.id for p in self._plans]

    def jobs(self) -> list[dict[str, Any]]:
        """The listing as of the clock now, newest first."""
        return self.jobs_at(self._clock())

    def jobs_at(self, now: datetime) -> list[dict[str, Any]]:
        """The listing as of `now` (on the caller's clock), newest first."""
        t = self.sim_seconds(now)
        listed: list[tuple[float, dict[str, Any]]] = []
        for plan in self._plans:
            while plan.runs[-1].created <= t:
                plan.runs.append(self._next_run(plan, after=plan.runs[-1]))
            visible = [r for r in plan.runs if r.created <= t][-self.keep :]
            listed += [(r.created, self._view(r, t)) for r in visible]
        listed.sort(key=lambda item: item[0], reverse=True)
        return [view for _, view in listed]

    def sim_seconds(self, now: datetime) -> float:
        """Simulated seconds since the start; negative before it."""
        return (now - self.origin).total_seconds() * self.speed

    def at(self, t: float) -> datetime:
        """The instant on the caller's clock when simulated time reaches `t`."""
        return self.origin + timedelta(seconds=t / self.speed)

    # --- planning ---------------------------------------------------------------------------
    def _open(self, plan: _Plan, index: int, history: float) -> _Plan:
        """The staged opening run around the start, and the history before it.

        Opening runs end one after another, OPENING_FIRST simulated seconds after the start,
        then about every OPENING_STEP (2 s, 3.3 s, 4.5 s, ... at speed 60), so a demo sees
        them after its first (baseline) poll and not all at once.
        """
        c, rng = plan.connector, plan.rng
        created = -rng.uniform(30, 150)
        started = created + rng.uniform(5, 25)
        ended = OPENING_FIRST + index * OPENING_STEP + rng.uniform(0, OPENING_STEP * 0.8)
        outcome = c.opening or self._draw_outcome(rng, c)
        kind = c.failures[0] if outcome == "failed" else None
        opening = self._make_run(plan, created, started, ended, outcome, kind)
        history_runs: list[Run] = []
        t = created - history
        while True:
            run = self._plan_run(plan, t, limit=created - rng.uniform(20, 90))
            if run is None:
                break
            history_runs.append(run)
            t = max(run.created + c.every * rng.uniform(0.9, 1.1), run.ended + 10)
        plan.runs = [*history_runs, opening]
        return plan

    def _next_run(self, plan: _Plan, after: Run) -> Run:
        c, rng = plan.connector, plan.rng
        created = max(after.created + c.every * rng.uniform(0.9, 1.1), after.ended + 10)
        forced = None
        if plan.scripted < len(c.then):
            forced, plan.scripted = c.then[plan.scripted], plan.scripted + 1
        run = self._plan_run(plan, created, limit=None, outcome=forced)
        assert run is not None  # no limit: always a run
        return run

    def _plan_run(
        self, plan: _Plan, created: float, limit: float | None, outcome: str | None = None
    ) -> Run | None:
        """A run created at `created`; None when it could not end before `limit`."""
        c, rng = plan.connector, plan.rng
        mode = "full_refresh" if rng.random() < 0.12 else "incremental"
        planned = rng.uniform(*c.run_seconds) * (3 if mode == "full_refresh" else 1)
        start = created + rng.uniform(3, 45)
        started: float | None = start
        outcome = outcome or self._draw_outcome(rng, c)
        kind: FailureKind | None = None
        if outcome == "failed":
            kind = rng.choice(c.failures)
            ended = start + planned * rng.uniform(*kind.at) + 1
        elif outcome == "cancelled" and rng.random() < 0.3:
            ended, started = start, None  # cancelled while still queued
        elif outcome == "cancelled":
            ended = start + planned * rng.uniform(0.1, 0.9)
        else:
            ended = start + planned
        if limit is not None and (ended > limit or created > limit):
            return None
        return self._make_run(plan, created, started, ended, outcome, kind, mode)

    @staticmethod
    def _draw_outcome(rng: random.Random, c: Connector) -> str:
        roll = rng.random()
        if roll < c.failure_rate:
            return "failed"
        if roll < c.failure_rate + c.cancel_rate:
            return "cancelled"
        return "succeeded"

    def _make_run(
        self,
        plan: _Plan,
        created: float,
        started: float | None,
        ended: float,
        outcome: str,
        kind: FailureKind | None,
        mode: str = "incremental",
    ) -> Run:
        rng, c = plan.rng, plan.connector
        when = self.at(created)
        state, message = outcome, None
        if kind is not None:
            state, message = kind.state, kind.message(rng, when)
        elif outcome == "cancelled":
            message = failures.cancel_message(rng, when)
        manual = rng.random() < 0.1
        sync_id = None if manual else f"sync_{c.id.split('-')[0]}_{rng.getrandbits(32):08x}"
        return Run(
            id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            connector=c,
            mode=mode,
            sync_id=sync_id,
            created=created,
            started=started,
            ended=ended,
            state=state,
            rate=rng.uniform(*c.rows_per_sec),
            message=message,
        )

    # --- what the API shows -----------------------------------------------------------------
    def _view(self, run: Run, t: float) -> dict[str, Any]:
        c = run.connector
        finished = t >= run.ended
        if finished:
            state, updated = run.state, run.ended
        elif run.started is not None and t >= run.started:
            state = "running"
            updated = run.started + (t - run.started) // PROGRESS_EVERY * PROGRESS_EVERY
        else:
            state, updated = "queued", run.created
        started = run.started if run.started is not None and t >= run.started else None
        duration: float | None = None
        rate: float | None = None
        if started is not None:
            duration = min(t, run.ended) - started
            rows_window = (updated if not finished else run.ended) - started
            if rows_window >= MEASURABLE_AFTER:
                rate = round(run.rows_at(t) / rows_window, 1)
        return {
            "id": run.id,
            "connector_id": c.id,
            "kb_uid": c.kb_uid,
            "dest_table": c.dest_table,
            "mode": run.mode,
            "state": state,
            "rows_emitted": run.rows_at(t),
            "created_at": self.at(run.created).isoformat(),
            "updated_at": self.at(updated).isoformat(),
            "started_at": self.at(started).isoformat() if started is not None else None,
            "finished_at": self.at(run.ended).isoformat() if finished else None,
            "duration_ms": int(duration * 1000) if duration is not None else None,
            "rows_per_sec": rate,
            "message": run.message if finished else None,
            "sync_id": run.sync_id,
        }
