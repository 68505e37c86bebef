"""Benchmarks. Each prints a figure and its ratio to a baseline measured in the same run.

- diff:     bot.alerts.diff.diff over N jobs   vs  the floor: classifying the same N jobs
- commit:   one poll cycle's storage work (load + diff + commit) on a real redis-server,
            100 vs 10,000 jobs: time and Redis commands per cycle (must not grow with jobs)
- render:   the /jobs reply for 1,000 jobs  vs  json-serialising the 10 jobs it shows
- ack:      /jobs ack latency over HTTP with a Timbal that takes 2 s  vs  GET /healthz
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from bot.alerts.diff import diff
from bot.app.config import load_settings
from bot.app.runtime import running
from bot.domain.models import Job
from bot.domain.states import StateClassifier
from bot.jobs.listing import render_jobs_listing
from bot.jobs.query import JobsQuery
from bot.sim.slack_api import FakeSlack
from bot.sim.slash import sign, slash_command_body
from bot.sim.timbal_api import FakeTimbal, make_job
from storage.keys import Keys
from storage.outbox import Outbox
from storage.snapshots import SnapshotStore
from tests.redis_server import RedisServer, RedisUnavailable

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CLASSIFIER = StateClassifier()
STATES = ["running", "queued", "succeeded", "failed", "cancelled"]


def jobs(n: int, *, flip: int = 0) -> list[Job]:
    out = []
    for i in range(n):
        state = STATES[i % len(STATES)]
        if i < flip:
            state = "failed"
        finished = (NOW - timedelta(minutes=1)).isoformat() if state not in STATES[:2] else None
        out.append(
            Job.model_validate(
                make_job(
                    f"job{i:06d}",
                    connector_id=f"conn-{i % 40}",
                    state=state,
                    finished_at=finished,
                    created_at=(NOW - timedelta(seconds=i)).isoformat(),
                    rows_emitted=i * 10,
                    message="boom " * 40 if state == "failed" else None,
                )
            )
        )
    return out


def best_ms(fn: Callable[[], object], repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def line(name: str, value: float, unit: str, base: float, base_name: str) -> None:
    ratio = value / base if base else float("inf")
    print(
        f"{name:<34} {value:>10.2f} {unit:<4}  baseline {base_name} {base:.2f} {unit}  x{ratio:.1f}"
    )


class RoundTrips:
    """Counts requests sent to Redis (a pipeline or a script is one) while active."""

    def __init__(self) -> None:
        self.count = 0
        self._original = AbstractConnection.send_packed_command

    def __enter__(self) -> RoundTrips:
        original = self._original

        async def counting(
            conn: AbstractConnection, command: Any, check_health: bool = True
        ) -> None:
            self.count += 1
            await original(conn, command, check_health)

        AbstractConnection.send_packed_command = counting  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        AbstractConnection.send_packed_command = self._original  # type: ignore[method-assign]


def bench_diff() -> None:
    for n in (1_000, 10_000):
        listing = jobs(n)
        previous = diff(None, listing, NOW, org_id="o", classifier=CLASSIFIER).upserts
        changed = jobs(n, flip=n // 100)
        ms = best_ms(
            lambda: diff(previous, changed, NOW, org_id="o", classifier=CLASSIFIER)  # noqa: B023
        )
        floor = best_ms(lambda: [CLASSIFIER.classify(j) for j in changed])  # noqa: B023
        line(f"diff {n:,} jobs (1% changed)", ms, "ms", floor, "classify-only")


async def bench_commit(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    figures = {}
    for n in (100, 10_000):
        await client.flushall()
        keys = Keys("bench", f"org{n}")
        store, outbox = SnapshotStore(client, keys), Outbox(client, keys)
        await outbox.commit(diff(None, jobs(n), NOW, org_id="o", classifier=CLASSIFIER), NOW)
        changed = jobs(n, flip=n // 100)
        with RoundTrips() as trips:
            start = time.perf_counter()
            previous = await store.load()
            result = diff(previous, changed, NOW, org_id="o", classifier=CLASSIFIER)
            await outbox.commit(result, NOW)
            ms = (time.perf_counter() - start) * 1000
        figures[n] = (ms, trips.count)
        print(f"poll storage work, {n:>6,} jobs      {ms:>10.2f} ms    round trips: {trips.count}")
    await client.aclose()
    ms_small, cmd_small = figures[100]
    ms_big, cmd_big = figures[10_000]
    print(
        f"  10,000 vs 100 jobs: time x{ms_big / ms_small:.1f}, "
        f"round trips x{cmd_big / max(cmd_small, 1):.1f} (must stay x1.0)"
    )


def bench_render() -> None:
    listing = jobs(1_000)
    query = JobsQuery()
    ms = best_ms(
        lambda: render_jobs_listing(
            listing, query=query, classifier=CLASSIFIER, now=NOW, org_id="o"
        )
    )
    shown = sorted(listing, key=lambda j: j.created_at, reverse=True)[: query.limit]
    floor = best_ms(lambda: json.dumps([j.model_dump(mode="json") for j in shown]))
    line("render /jobs reply (1,000 jobs)", ms, "ms", floor, "json-dump-10")


async def bench_ack(redis_url: str) -> None:
    slack = await FakeSlack().start()
    timbal = await FakeTimbal(delay=2.0).start()
    timbal.jobs = [make_job(f"j{i}") for i in range(50)]
    settings = load_settings(
        timbal_api_url=timbal.base_url,
        timbal_api_key=timbal.api_key,
        timbal_org_id=timbal.org_id,
        slack_bot_token=slack.bot_token,
        slack_signing_secret="bench-secret",
        slack_app_token=None,
        slack_mode="http",
        slack_api_url=slack.base_url,
        host="127.0.0.1",
        port=0,
        redis_url=redis_url,
        log_level="WARNING",
    )
    acks: list[float] = []
    health: list[float] = []
    async with running(settings, poller=False, notifier=False) as rt, httpx.AsyncClient() as http:
        for i in range(30):
            body = slash_command_body(text="", response_url=slack.response_url(f"b{i}"))
            req = sign(body, "bench-secret")
            start = time.perf_counter()
            res = await http.post(
                f"{rt.base_url}/slack/events", content=req.body, headers=req.headers
            )
            acks.append((time.perf_counter() - start) * 1000)
            assert res.status_code == 200, res.text
            start = time.perf_counter()
            await http.get(f"{rt.base_url}/healthz")
            health.append((time.perf_counter() - start) * 1000)
        await slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 30, within=30)
    await slack.stop()
    await timbal.stop()
    p50, p95 = statistics.median(acks), sorted(acks)[int(len(acks) * 0.95) - 1]
    line("/jobs ack p50 (Timbal takes 2 s)", p50, "ms", statistics.median(health), "healthz-p50")
    line("/jobs ack p95 (Timbal takes 2 s)", p95, "ms", statistics.median(health), "healthz-p50")
    print(f"  replies delivered after the ack: {len(slack.calls_to('response_url'))}/30")


async def main() -> None:
    print("timbal-jobs-bot benchmarks (best of 7 unless noted; lower is better)\n")
    bench_diff()
    bench_render()
    server = RedisServer()
    try:
        server.start()
    except RedisUnavailable as exc:
        print(f"skipping Redis benchmarks: {exc}")
        return
    try:
        await bench_commit(server.url)
        await bench_ack(server.url)
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
