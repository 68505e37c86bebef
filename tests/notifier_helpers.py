"""Shared pieces of the notifier tests: events, outbox entries as the poller writes them, a
notifier pointed at FakeSlack with test-sized timings, and a background runner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts.notifier import Notifier
from bot.alerts.route import Router, single_channel_router
from bot.app.metrics import Metrics
from bot.domain.events import EventKind, JobEvent
from bot.domain.models import Job
from storage.keys import Keys
from tests.fakes import FakeSlack, make_job

CH = "C0ALERTS"
KEYS = Keys("tjb", "org_n")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


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
    }
    base.update(fields)
    job = Job.model_validate(make_job(f"job_{i:03d}", **base))
    return JobEvent(org_id=KEYS.org_id, kind=kind, job=job, detected_at=finished)


async def enqueue(r: aioredis.Redis, *events: JobEvent) -> list[str]:
    """Outbox entries exactly as `storage.outbox.commit` writes them."""
    return [
        str(await r.xadd(KEYS.outbox, {"event_id": e.event_id, "event": e.model_dump_json()}))
        for e in events
    ]


def make_notifier(
    r: aioredis.Redis,
    fake: FakeSlack,
    *,
    consumer: str = "n1",
    router: Router | None = None,
    metrics: Metrics | None = None,
    **timing: Any,
) -> Notifier:
    settings: dict[str, Any] = {
        "digest_threshold": 1000,
        "channel_min_interval": 0.0,
        "block": 0.05,
        "idle_wait": 0.02,
        "reclaim_idle": 0.3,
        "retry_base": 0.05,
        "retry_cap": 0.2,
    }
    settings.update(timing)
    return Notifier(
        redis=r,
        slack=AsyncWebClient(token=fake.bot_token, base_url=fake.base_url),
        keys=KEYS,
        router=router or single_channel_router(CH),
        metrics=metrics or Metrics(),
        consumer=consumer,
        **settings,
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
    payload = (message.get("metadata") or {}).get("event_payload") or {}
    if "event_id" in payload:
        return [str(payload["event_id"])]
    return [str(e) for e in payload.get("event_ids", [])]


def delivered(fake: FakeSlack, channel: str | None = CH) -> list[str]:
    """Event ids in the order Slack accepted them (top-level messages only)."""
    return [e for m in fake.posted(channel) if not m["thread_ts"] for e in event_ids(m)]


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return float(value or 0.0)


def routes(table: dict[str, list[str]]) -> Callable[[JobEvent], list[str]]:
    """A router by connector id (for tests that need several channels)."""

    def router(event: JobEvent, /) -> list[str]:
        return table.get(event.job.connector_id, [CH])

    return router


async def dead_letters(r: aioredis.Redis) -> list[dict[str, str]]:
    rows: Any = await r.xrange(KEYS.dead_letter)
    return [dict(fields) for _, fields in rows]


async def outbox_empty(r: aioredis.Redis) -> bool:
    return int(await r.xlen(KEYS.outbox)) == 0
