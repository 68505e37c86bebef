"""Shared pieces of the notifier tests: events, outbox entries as the poller writes them, a
notifier pointed at FakeSlack with test-sized timings (its replica registered alive), and a
background runner."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts.decide import Policy
from bot.alerts.deliver import Timing
from bot.alerts.notifier import Notifier, NotifierConfig
from bot.alerts.route import Router, single_channel_router, static
from bot.app.metrics import Metrics
from bot.domain.delivery import Route
from bot.domain.events import EventKind, JobEvent
from bot.domain.models import Job
from storage.connection import Redis
from storage.keys import Keys
from storage.replicas import Identity
from tests.fakes import FakeSlack, make_job
from tests.replica_helpers import alive, identity

CH = "C0ALERTS"
KEYS = Keys("tjb", "org_n")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

TIMING_FIELDS = {f.name for f in dataclasses.fields(Timing)}
POLICY_FIELDS = {f.name for f in dataclasses.fields(Policy)}


def job_event(i: int, kind: EventKind = EventKind.FAILED, **fields: Any) -> JobEvent:
    finished = T0 + timedelta(seconds=i)
    base: dict[str, Any] = {
        "state": {"failed": "failed", "succeeded": "succeeded"}.get(kind.value, kind.value),
        "created_at": T0.isoformat(),
        "updated_at": finished.isoformat(),
        "started_at": T0.isoformat(),
        "finished_at": finished.isoformat(),
        "rows_emitted": 10 * i,
        "message": f"boom {i}" if kind is EventKind.FAILED else None,
        # One connector per job: each failure is its own incident (its own top-level card),
        # so delivery tests see one message per event; incident tests share a connector.
        "connector_id": f"conn-{i:03d}",
    }
    base.update(fields)
    job = Job.model_validate(make_job(f"job_{i:03d}", **base))
    return JobEvent(org_id=KEYS.org_id, kind=kind, job=job, detected_at=finished)


async def enqueue(r: Redis, *events: JobEvent) -> list[str]:
    """Outbox entries exactly as `storage.outbox.commit` writes them."""
    return [
        str(await r.xadd(KEYS.outbox, {"event_id": e.event_id, "event": e.model_dump_json()}))
        for e in events
    ]


def notifier_config(**overrides: Any) -> NotifierConfig:
    """Test-sized timings; `overrides` may name NotifierConfig, Timing or Policy fields."""
    timing: dict[str, Any] = {"slack_timeout": 5.0, "margin": 1.0, "pace": 0.0}
    policy: dict[str, Any] = {"backoff_base": 0.05, "backoff_cap": 0.2}
    config: dict[str, Any] = {
        "digest_threshold": 1000,
        "block": 0.05,
        "standby_poll": 0.02,
        "adopt_every": 0.2,
        "probe_every": 0.05,
        "paused_probe_every": 0.1,
        "grace": 0.2,
    }
    for name, value in overrides.items():
        if name in TIMING_FIELDS:
            timing[name] = value
        elif name in POLICY_FIELDS:
            policy[name] = value
        else:
            config[name] = value
    return NotifierConfig(**config, timing=Timing(**timing), policy=Policy(**policy))


async def make_notifier(
    r: Redis,
    fake: FakeSlack,
    *,
    who: Identity | str = "n1",
    router: Router | None = None,
    metrics: Metrics | None = None,
    mention: str | None = None,
    clock: Callable[[], datetime] | None = None,
    **overrides: Any,
) -> Notifier:
    me = who if isinstance(who, Identity) else identity(who)
    await alive(r, KEYS, me)
    return Notifier(
        redis=r,
        keys=KEYS,
        slack=AsyncWebClient(token=fake.bot_token, base_url=fake.base_url),
        routes=static(router or single_channel_router(CH, mention)),
        identity=me,
        metrics=metrics or Metrics(),
        config=notifier_config(**overrides),
        clock=clock or (lambda: datetime.now(UTC)),
    )


@contextlib.asynccontextmanager
async def running(*notifiers: Notifier) -> AsyncIterator[None]:
    """`run_forever` in the background for the block; stopped (and awaited) afterwards."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(n.run_forever(stop)) for n in notifiers]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)


def event_ids(message: dict[str, Any]) -> list[str]:
    """The events a message of ours reports, from its metadata."""
    payload = (message.get("metadata") or {}).get("event_payload") or {}
    return [str(e) for e in payload.get("events", [])]


def action_ids(message: dict[str, Any]) -> list[str]:
    payload = (message.get("metadata") or {}).get("event_payload") or {}
    return [str(a) for a in payload.get("actions", [])]


def delivered(fake: FakeSlack, channel: str | None = CH) -> list[str]:
    """Event ids in the order Slack accepted them (top-level posts only)."""
    return [
        e
        for m in fake.posted(channel)
        if not m["thread_ts"] and m["method"] == "chat.postMessage"
        for e in event_ids(m)
    ]


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return float(value or 0.0)


def routes(table: dict[str, list[str]]) -> Router:
    """A router by connector id (for tests that need several channels)."""

    def router(event: JobEvent, /) -> list[Route]:
        return [Route(channel=ch) for ch in table.get(event.job.connector_id, [CH])]

    return router


def to(*channels: str) -> Router:
    def router(event: JobEvent, /) -> list[Route]:
        return [Route(channel=ch) for ch in channels]

    return router


async def dead_letters(r: Redis) -> list[dict[str, str]]:
    rows: Any = await r.xrange(KEYS.dead_letter)
    return [dict(fields) for _, fields in rows]


async def outbox_empty(r: Redis) -> bool:
    return int(await r.xlen(KEYS.outbox)) == 0
