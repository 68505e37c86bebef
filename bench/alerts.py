"""Alerts end to end with real bot processes against the fakes (as tests/test_crash_safety.py
runs them), POLL_INTERVAL_SECONDS=1:

- latency: from a job's state change at the fake Timbal to its message at the fake Slack,
  one change at a time, at a random phase of the poll, at N jobs;
- takeover: two replicas; the one delivering (the notifier lease's holder) is SIGKILLed as a
  job fails; the time until that failure's message is posted by the other one.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from bench.procs import BotProcess, log_file, until
from bench.stats import median, percentile
from storage.keys import Keys
from tests.fakes import FakeSlack, FakeTimbal, make_job
from tests.proc import clean_env

CHANNEL = "C0ALERTS"
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@dataclass
class LatencyFigures:
    jobs: int
    p50_ms: float
    p99_ms: float
    samples: list[float] = field(default_factory=list)


@dataclass
class TakeoverFigures:
    kills: int
    median_ms: float
    max_ms: float
    samples: list[float] = field(default_factory=list)


def _events(message: dict[str, Any]) -> list[str]:
    payload = (message.get("metadata") or {}).get("event_payload") or {}
    return [str(e) for e in payload.get("events", [])]


def _env(slack: FakeSlack, timbal: FakeTimbal, redis_url: str, **extra: str) -> dict[str, str]:
    return clean_env(
        TIMBAL_API_URL=timbal.base_url,
        TIMBAL_API_KEY=timbal.api_key,
        TIMBAL_ORG_ID=timbal.org_id,
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_API_URL=slack.base_url,
        SLACK_SIGNING_SECRET="bench-secret",
        SLACK_MODE="http",
        PORT="0",
        HOST="127.0.0.1",
        REDIS_URL=redis_url,
        ALERT_CHANNEL=CHANNEL,
        POLL_INTERVAL_SECONDS="1",
        LOG_LEVEL="WARNING",
        **extra,
    )


class Org:
    """N running jobs at the fake Timbal; `fail(i)` ends job i with a new finish time."""

    def __init__(self, timbal: FakeTimbal, jobs: int) -> None:
        self.timbal = timbal
        self.clock = T0
        self.index = {}
        for i in range(jobs):
            job = make_job(f"job{i:05d}", connector_id=f"conn-{i % 40}", state="running")
            self.index[job["id"]] = job
            timbal.jobs.append(job)

    def fail(self, i: int) -> str:
        """Job i fails now (or, failed already, runs again and fails): its event id."""
        job_id = f"job{i:05d}"
        self.clock += timedelta(seconds=1)
        finished = self.clock.isoformat()
        self.index[job_id].update(state="failed", finished_at=finished, updated_at=finished)
        return f"{self.timbal.org_id}:{job_id}:failed:{finished}"


async def _baseline(redis: aioredis.Redis, keys: Keys) -> None:
    async def recorded() -> bool:
        return bool(await redis.exists(keys.baseline))

    await until(recorded, 120, "the first poll's baseline")


def _arrival(slack: FakeSlack, event_id: str) -> float | None:
    for message in slack.posted(CHANNEL):
        if event_id in _events(message):
            return float(message["at"])
    return None


async def _delivered(slack: FakeSlack, event_id: str, within: float, what: str) -> float:
    """When the message carrying `event_id` arrived (monotonic)."""

    def seen() -> bool:
        return _arrival(slack, event_id) is not None

    await until(seen, within, what)
    arrived = _arrival(slack, event_id)
    assert arrived is not None
    return arrived


async def latency(redis_url: str, *, jobs: int, samples: int, seed: int = 11) -> LatencyFigures:
    rng = random.Random(seed)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await redis.flushall()
    slack = await FakeSlack().start()
    timbal = await FakeTimbal().start()
    org = Org(timbal, jobs)
    keys = Keys("tjb", timbal.org_id)
    env = _env(slack, timbal, redis_url, REPLICA_ID="solo")
    bot = BotProcess(env, "--no-commands", log=log_file(f"alerts-{jobs}"))
    found: list[float] = []
    try:
        await bot.start()
        await _baseline(redis, keys)
        for n in range(samples):
            await asyncio.sleep(1.0 + rng.random())  # a random phase; the channel's pace is 1/s
            event_id = org.fail(n % jobs)
            changed = time.monotonic()
            arrived = await _delivered(slack, event_id, 30, "the alert")
            found.append((arrived - changed) * 1000)
    finally:
        await bot.stop()
        await slack.stop()
        await timbal.stop()
        await redis.aclose()
    return LatencyFigures(jobs, median(found), percentile(found, 99), found)


async def takeover(redis_url: str, *, kills: int, seed: int = 5) -> TakeoverFigures:
    rng = random.Random(seed)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await redis.flushall()
    slack = await FakeSlack().start()
    timbal = await FakeTimbal().start()
    org = Org(timbal, 20)
    keys = Keys("tjb", timbal.org_id)
    bots = {}
    for name in ("replica-a", "replica-b"):
        env = _env(slack, timbal, redis_url, REPLICA_ID=name, CHANNEL_MIN_INTERVAL_SECONDS="0")
        bots[name] = BotProcess(env, "--no-commands", log=log_file(name))
    found: list[float] = []

    async def both_alive() -> bool:
        return int(await redis.hlen(keys.replicas)) == 2

    async def holder() -> str | None:
        raw = await redis.get(keys.notifier_lease)
        return str(json.loads(raw)["replica"]) if raw else None

    try:
        for bot in bots.values():
            await bot.start()
        await _baseline(redis, keys)
        for n in range(kills):
            # Both replicas up, one delivering: a first alert proves it.
            await _delivered(slack, org.fail(n % 20), 60, "a delivery")
            await until(both_alive, 60, "both replicas alive")
            await asyncio.sleep(rng.random())
            active = await holder()
            assert active in bots, active
            await bots[active].kill()
            killed = time.monotonic()
            arrived = await _delivered(slack, org.fail((n + 10) % 20), 60, "the takeover")
            found.append((arrived - killed) * 1000)
            await bots[active].start()  # restarted under its id, as a container would be
    finally:
        for bot in bots.values():
            await bot.stop()
        await slack.stop()
        await timbal.stop()
        await redis.aclose()
    return TakeoverFigures(kills, median(found), max(found) if found else float("nan"), found)
