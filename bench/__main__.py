"""`make bench`: every figure of issue 11, measured in one run, printed as one table and
written to `bench/results/latest.json`.

    python -m bench            # the full run (a few minutes on 2 cores)
    python -m bench --tiny     # each scenario once at a tiny size (what `make test` runs)

Scenarios (each module says what it measures and against what):

- bench.cycle      the poll cycle ÷ its floor (the same fetch and parse, nothing else) at
                   1,000 / 10,000 / 50,000 jobs with 1 % changing; the naive per-job GET/SET
                   baseline; Redis round trips per cycle; Redis bytes per tracked job
- bench.rss        the poller's peak RSS at 1,000 and 50,000 jobs, in processes of their own
- bench.jobs_load  200 concurrent signed /jobs across 3 connectors: ack and reply
                   percentiles, upstream calls
- bench.alerts     alert latency at 100 and 10,000 jobs; takeover after a SIGKILL

Every figure is a median over repeated runs (percentiles are per run, then the median).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import alerts, cycle, jobs_load
from bench.procs import listing_server
from bench.stats import Row, Table, at_most
from tests.redis_server import RedisServer, RedisUnavailable

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    """How much of each scenario to run."""

    sizes: tuple[int, ...]
    rounds: dict[int, int]
    naive: dict[int, int]
    rss_sizes: tuple[int, int]
    bursts: int
    burst: int
    quiet_bursts: int
    quiet: float
    latency: tuple[tuple[int, int], ...]  # (jobs, samples)
    kills: int


FULL = Plan(
    sizes=(1_000, 10_000, 50_000),
    rounds={1_000: 9, 10_000: 7, 50_000: 5},
    naive={1_000: 3, 10_000: 1},
    rss_sizes=(1_000, 50_000),
    bursts=3,
    burst=200,
    quiet_bursts=3,
    quiet=jobs_load.QUIET_SECONDS,
    latency=((100, 20), (10_000, 12)),
    kills=5,
)
TINY = Plan(
    sizes=(200,),
    rounds={200: 1},
    naive={200: 1},
    rss_sizes=(100, 200),
    bursts=1,
    burst=12,
    quiet_bursts=1,
    quiet=0.5,  # the code path, not the figure
    latency=((20, 1),),
    kills=1,
)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores (nproc), {cpu}, {platform.system()} {platform.release()}"


async def rss_kb(jobs: int, redis_url: str) -> int:
    async with listing_server(jobs) as timbal_url:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.rss",
            "--jobs",
            str(jobs),
            "--timbal",
            timbal_url,
            "--redis",
            redis_url,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench.rss failed at {jobs} jobs")
    return int(out.decode().split()[-1])


async def run(plan: Plan, table: Table, redis_url: str) -> None:
    figures: dict[int, cycle.CycleFigures] = {}
    for jobs in plan.sizes:
        f = await cycle.measure(
            jobs, redis_url, rounds=plan.rounds[jobs], naive_rounds=plan.naive.get(jobs, 0)
        )
        figures[jobs] = f
        table.details[f"cycle_{jobs}"] = f.__dict__ | {"ratio": f.ratio}
    for jobs, f in figures.items():
        gated = jobs >= 10_000
        table.add(
            at_most(
                f"cycle ÷ floor, {jobs:,} jobs, 1 % changing",
                f.ratio,
                "x",
                1.5 if gated else None,
                f"cycle {f.cycle_ms:.0f} ms, floor {f.floor_ms:.0f} ms, "
                f"{f.listing_bytes / 1e6:.1f} MB listing, {f.events_per_cycle:.0f} alerts",
            )
        )
    for jobs, f in figures.items():
        if f.naive_ms is not None:
            gated = jobs == 10_000
            speedup = f.naive_ms / f.cycle_ms
            table.add(
                Row(
                    f"naive per-job GET/SET ÷ cycle, {jobs:,} jobs",
                    speedup,
                    "x",
                    ">= 10" if gated else "",
                    speedup >= 10 if gated else None,
                    f"naive {f.naive_ms:.0f} ms",
                )
            )
    trips = {jobs: f.round_trips for jobs, f in figures.items()}
    constant = len(set(trips.values())) == 1
    table.add(
        Row(
            "Redis round trips per cycle (max over runs)",
            max(trips.values()),
            "",
            "<= 4, = N",
            constant and max(trips.values()) <= 4,
            ", ".join(f"{n:,}: {t}" for n, t in trips.items()),
        )
    )
    biggest = max(figures)
    per_job = figures[biggest].bytes_per_job
    gated = biggest >= 50_000
    table.add(
        Row(
            f"Redis bytes per tracked job, {biggest:,} jobs",
            per_job,
            "B",
            "<= 120" if gated else "",
            per_job <= 120 if gated else None,
            "INFO memory used_memory after the baseline, less before, ÷ N",
        )
    )

    small, large = plan.rss_sizes
    peak_small, peak_large = await rss_kb(small, redis_url), await rss_kb(large, redis_url)
    growth = (peak_large - peak_small) / 1024
    gated = large >= 50_000
    table.add(Row(f"peak RSS of a poller, {large:,} jobs", peak_large / 1024, "MB"))
    table.add(
        Row(
            f"peak RSS growth {small:,} -> {large:,} jobs",
            growth,
            "MB",
            "< 60" if gated else "",
            growth < 60 if gated else None,
            f"{peak_small / 1024:.0f} MB at {small:,}",
        )
    )

    load = await jobs_load.measure(
        redis_url,
        bursts=plan.bursts,
        size=plan.burst,
        quiet_bursts=plan.quiet_bursts,
        quiet=plan.quiet,
    )
    table.details["jobs_load"] = load.__dict__
    gated = plan.burst >= 200
    table.add(
        at_most(
            f"/jobs ack p99, {load.requests} concurrent",
            load.ack_p99_ms,
            "ms",
            100 if gated else None,
            f"p50 {load.ack_p50_ms:.0f} ms",
        )
    )
    budget = load.timbal_ms + 100
    table.add(
        at_most(
            f"/jobs reply p99, Timbal takes {load.timbal_ms:.0f} ms",
            load.reply_p99_ms,
            "ms",
            budget if gated else None,
            f"p50 {load.reply_p50_ms:.0f} ms; worst burst"
            f" {max(load.samples['reply_p99_per_burst']):.0f} ms;"
            f" {load.reply_p99_from_call_ms:.0f} ms from the send call;"
            f" warm-up burst {load.warmup_reply_p99_ms:.0f} ms",
        )
    )
    if load.quiet_reply_p99_ms is not None:
        table.add(
            at_most(
                f"/jobs reply p99 after {load.quiet_seconds:.0f} s quiet",
                load.quiet_reply_p99_ms,
                "ms",
                budget if gated else None,
                f"worst burst {max(load.samples['quiet_reply_p99_per_burst']):.0f} ms;"
                " every connection opened anew (to the bot, the response URLs, Timbal)",
            )
        )
    table.add(
        at_most(
            f"/jobs upstream calls per burst of {load.requests}, 3 connectors",
            load.upstream_calls,
            "",
            6 if gated else None,
            "each burst cold (after JOBS_CACHE_SECONDS)",
        )
    )

    for jobs, samples in plan.latency:
        lat = await alerts.latency(redis_url, jobs=jobs, samples=samples)
        table.details[f"alert_latency_{jobs}"] = lat.__dict__
        target = {100: 1500.0, 10_000: 2000.0}.get(jobs)
        table.add(
            at_most(
                f"alert latency p99, {jobs:,} jobs, POLL_INTERVAL_SECONDS=1",
                lat.p99_ms,
                "ms",
                target,
                f"p50 {lat.p50_ms:.0f} ms, {samples} changes",
            )
        )
    take = await alerts.takeover(redis_url, kills=plan.kills)
    table.details["takeover"] = take.__dict__
    table.add(
        Row(
            "takeover after SIGKILL of the delivering replica",
            take.median_ms,
            "ms",
            "",
            None,
            f"max {take.max_ms:.0f} ms over {take.kills} kills (median shown)",
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--tiny", action="store_true", help="each scenario once, tiny")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    options = parser.parse_args()
    plan = TINY if options.tiny else FULL
    server = RedisServer()
    try:
        server.start()
    except RedisUnavailable as exc:
        print(f"bench: no redis-server to run against: {exc}", file=sys.stderr)
        return 1
    table = Table()
    started = time.monotonic()
    try:
        asyncio.run(run(plan, table, server.url))
    finally:
        server.stop()
    table.details["machine"] = machine()
    table.details["seconds"] = round(time.monotonic() - started, 1)
    print(f"timbal-jobs-bot benchmarks · {machine()}")
    print("every figure a median over repeated runs; every ratio measured in the same run\n")
    print(table.render())
    held = [r.holds for r in table.rows if r.holds is not None]
    print(f"\n{sum(held)}/{len(held)} targets hold · {table.details['seconds']:.0f} s")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(table.as_json(), indent=2, default=_plain) + "\n")
    return 0


def _plain(value: Any) -> Any:
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
