"""The poll cycle against its floor, the naive baseline, round trips and Redis bytes per job.

- floor: the same HTTP fetch of the same listing and its parse into `Job` models, nothing
  else (`TimbalClient.scan_jobs(JobCount)`), against the same server in the same run;
- cycle: `Poller.run_once()`: lease, snapshot, listing diffed as it streams, commit, with 1 %
  of the jobs changing before each cycle (half of them ending: alerts);
- naive: `bench.naive` (one GET and SET per job), at the sizes where it finishes in time;
- round trips: requests written to Redis during one cycle (a script or pipeline is one);
- bytes per job: `INFO memory` used_memory after the baseline, less before, over N.

Floor and cycle alternate, each after its own advance, and every figure is a median.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from bench.naive import naive_cycle
from bench.poller import bench_poller
from bench.procs import advance, listing_server
from bench.stats import median
from bot.timbal import JobCount


class RoundTrips:
    """Counts requests written to Redis while active (a pipeline or a script is one)."""

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


@dataclass
class CycleFigures:
    jobs: int
    floor_ms: float
    cycle_ms: float
    round_trips: int
    bytes_per_job: float
    naive_ms: float | None
    events_per_cycle: float
    listing_bytes: int
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.cycle_ms / self.floor_ms


async def used_memory(redis: aioredis.Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def measure(jobs: int, redis_url: str, *, rounds: int, naive_rounds: int) -> CycleFigures:
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await redis.flushall()
    async with listing_server(jobs) as base_url, httpx.AsyncClient() as http:
        poller, timbal = await bench_poller(redis, "bench", base_url)
        before = await used_memory(redis)
        await poller.run_once()  # the baseline
        bytes_per_job = (await used_memory(redis) - before) / jobs
        await advance(http, base_url)
        await poller.run_once()  # every script loaded, the connections open
        floors: list[float] = []
        cycles: list[float] = []
        trips: list[int] = []
        events: list[int] = []
        for turn in range(rounds):
            for what in ("floor", "cycle") if turn % 2 == 0 else ("cycle", "floor"):
                if what == "cycle":  # 1 % of the jobs change between two cycles
                    await advance(http, base_url)
                start = time.perf_counter()
                if what == "floor":
                    await timbal.scan_jobs(JobCount)
                    floors.append((time.perf_counter() - start) * 1000)
                else:
                    with RoundTrips() as counted:
                        result = await poller.run_once()
                    cycles.append((time.perf_counter() - start) * 1000)
                    trips.append(counted.count)
                    events.append(result.enqueued)
        stats = (await http.get(f"{base_url}/_bench/stats")).json()
        naive: list[float] = []
        for _ in range(naive_rounds):
            await advance(http, base_url)
            start = time.perf_counter()
            await naive_cycle(timbal, redis, "naive")
            naive.append((time.perf_counter() - start) * 1000)
        await timbal.aclose()
    await redis.aclose()
    return CycleFigures(
        jobs=jobs,
        floor_ms=median(floors),
        cycle_ms=median(cycles),
        round_trips=max(trips),
        bytes_per_job=bytes_per_job,
        naive_ms=median(naive) if naive else None,
        events_per_cycle=median([float(e) for e in events]),
        listing_bytes=int(stats["bytes"]),
        samples={"floor_ms": floors, "cycle_ms": cycles, "naive_ms": naive},
    )
