"""A stand-in Timbal for the benchmarks, in a process of its own: it serves an org of N jobs
from bytes encoded once (so its own CPU is not what the bot's cycle is measured against), and
`POST /_bench/advance` moves the next 1 % of the jobs to a new terminal state with a new
`finished_at` (so every cycle has real transitions to alert).

    python -m bench.listing_server --jobs 10000   # prints "port N", then serves until killed
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from bot.app.serve import serve

ORG = "org_bench"
API_KEY = "tbl-bench-key"
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
STATES = ("running", "queued", "succeeded", "failed", "cancelled")


def job_id(i: int) -> str:
    return f"job_{i:020d}"  # 24 characters, as a ULID-sized id


def make(i: int, *, flips: int = 0) -> dict[str, Any]:
    """Job `i` after `flips` moves: every move ends a run (failed) or starts one (running)."""
    state = STATES[i % len(STATES)]
    finished: str | None = None
    started = (T0 - timedelta(minutes=5)).isoformat()
    if flips:
        state = "failed" if flips % 2 else "running"
        started = (T0 + timedelta(seconds=flips)).isoformat()
    if state in ("succeeded", "failed", "cancelled"):
        finished = (T0 + timedelta(seconds=flips, microseconds=i)).isoformat()
    return {
        "id": job_id(i),
        "connector_id": f"conn-{i % 40}",
        "kb_uid": "kb_1",
        "dest_table": f"public.table_{i % 97}",
        "mode": "incremental",
        "state": state,
        "rows_emitted": i * 10,
        "created_at": (T0 - timedelta(seconds=i)).isoformat(),
        "updated_at": (T0 + timedelta(seconds=flips)).isoformat(),
        "duration_ms": 60000,
        "finished_at": finished,
        "message": ("boom " * 20).strip() if state == "failed" else None,
        "rows_per_sec": 12.5,
        "started_at": started,
        "sync_id": f"sync_{i % 13}",
    }


class Listing:
    def __init__(self, jobs: int, churn: float = 0.01) -> None:
        self.jobs = jobs
        self.step = max(1, int(jobs * churn))
        self.encoded = [json.dumps(make(i)).encode() for i in range(jobs)]
        self.flips = [0] * jobs
        self.cursor = 0
        self.requests = 0
        self._body: bytes | None = None

    def advance(self) -> int:
        for _ in range(self.step):
            i = self.cursor % self.jobs
            self.cursor += 1
            self.flips[i] += 1
            self.encoded[i] = json.dumps(make(i, flips=self.flips[i])).encode()
        self._body = None
        return self.step

    def body(self) -> bytes:
        if self._body is None:
            self._body = b'{"jobs": [' + b", ".join(self.encoded) + b"]}"
        return self._body


async def main(jobs: int, port: int) -> None:
    listing = Listing(jobs)

    async def jobs_handler(request: web.Request) -> web.Response:
        listing.requests += 1
        return web.Response(body=listing.body(), content_type="application/json")

    async def advance(request: web.Request) -> web.Response:
        return web.json_response({"changed": listing.advance()})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"requests": listing.requests, "bytes": len(listing.body())})

    app = web.Application()
    app.router.add_get(f"/orgs/{ORG}/connectors/jobs", jobs_handler)
    app.router.add_post("/_bench/advance", advance)
    app.router.add_get("/_bench/stats", stats)
    runner, bound = await serve(app, "127.0.0.1", port)
    print(f"port {bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args()
    asyncio.run(main(options.jobs, options.port))
