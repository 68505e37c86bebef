"""Peak RSS of a poller process during cycles of N jobs, in a process of its own.

The kernel's high-water mark (VmHWM, `ru_maxrss`) is inherited from the parent at fork and
kept across exec, so the process resets it first (`/proc/self/clear_refs`, "5": Linux 4.0+)
and reads VmHWM at the end; without it, `ru_maxrss` (an upper bound).

    python -m bench.rss --jobs N --timbal URL --redis URL --cycles 3   # prints "peak_kb K"
"""

from __future__ import annotations

import argparse
import asyncio
import resource
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from bench.poller import bench_poller
from bench.procs import advance


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_kb(reset: bool) -> int:
    if reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def main(jobs: int, timbal_url: str, redis_url: str, cycles: int) -> None:
    reset = reset_peak()
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await redis.flushall()
    poller, timbal = await bench_poller(redis, "rss", timbal_url)
    async with httpx.AsyncClient() as http:
        await poller.run_once()  # the baseline
        for _ in range(cycles):
            await advance(http, timbal_url)
            await poller.run_once()
    await timbal.aclose()
    await redis.aclose()
    print(f"peak_kb {peak_kb(reset)}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--timbal", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--cycles", type=int, default=3)
    options = parser.parse_args()
    asyncio.run(main(options.jobs, options.timbal, options.redis, options.cycles))
