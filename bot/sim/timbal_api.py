"""A fake Timbal API over real HTTP: `GET /orgs/{org_id}/connectors/jobs`.

Checks the bearer key (401 without it, 403 for another org), applies the `connector_id`
filter, serves whatever job dicts `jobs` holds (scripted lifecycles mutate them, or a
`source` callable such as the demo's simulator computes them), and can be told to fail:
a status with a body, a delay, a body that is not the documented shape, or an answer
trickled one byte every `trickle` seconds (headers at once, then the body, slowly).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bot.app.serve import serve


@dataclass
class Injected:
    status: int = 200
    body: str | None = None  # raw body; None: the normal listing
    content_type: str = "application/json"
    delay: float = 0.0
    trickle: float = 0.0  # seconds between two bytes of the body; 0: all at once
    times: int = 1


@dataclass
class FakeTimbal:
    api_key: str = "tbl-test-key"
    org_id: str = "org_test"
    jobs: list[dict[str, Any]] = field(default_factory=list)
    source: Callable[[], list[dict[str, Any]]] | None = None
    delay: float = 0.0  # seconds before every answer
    trickle: float = 0.0  # seconds between two bytes of every answer's body; 0: at once
    injected: list[Injected] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _port: int = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeTimbal:
        app = web.Application()
        app.router.add_get("/orgs/{org_id}/connectors/jobs", self._list)
        self._runner, self._port = await serve(app, host, port)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def inject(self, **kwargs: Any) -> None:
        self.injected.append(Injected(**kwargs))

    # --- scripted lifecycles -------------------------------------------------------
    def upsert(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Create or update a job; `updated_at` moves to now unless given."""
        now = datetime.now(UTC).isoformat()
        for job in self.jobs:
            if job["id"] == job_id:
                job.update(fields)
                job.setdefault("updated_at", now)
                if "updated_at" not in fields:
                    job["updated_at"] = now
                return job
        job = make_job(job_id, **fields)
        self.jobs.append(job)
        return job

    # --- handler ---------------------------------------------------------------------
    async def _list(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            {
                "org_id": request.match_info["org_id"],
                "query": dict(request.query),
                "authorization": request.headers.get("Authorization"),
            }
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.injected:
            inj = self.injected[0]
            inj.times -= 1
            if inj.times <= 0:
                self.injected.pop(0)
            if inj.delay:
                await asyncio.sleep(inj.delay)
            if inj.trickle:
                return await self._trickle(request, inj.trickle, self._listing(request))
            if inj.status != 200 or inj.body is not None:
                return web.Response(
                    status=inj.status, text=inj.body or "", content_type=inj.content_type
                )
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if request.match_info["org_id"] != self.org_id:
            return web.json_response({"error": "forbidden"}, status=403)
        if self.trickle:
            return await self._trickle(request, self.trickle, self._listing(request))
        return web.json_response(self._listing(request))

    def _listing(self, request: web.Request) -> dict[str, Any]:
        jobs = self.source() if self.source is not None else list(self.jobs)
        connector = request.query.get("connector_id")
        if connector is not None:
            jobs = [j for j in jobs if j.get("connector_id") == connector]
        return {"jobs": jobs}

    async def _trickle(
        self, request: web.Request, every: float, payload: dict[str, Any]
    ) -> web.StreamResponse:
        """Headers now, then the body one byte every `every` seconds, until the client leaves."""
        body = json.dumps(payload).encode()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        try:
            for i in range(len(body)):
                await response.write(body[i : i + 1])
                await asyncio.sleep(every)
            await response.write_eof()
        except (ConnectionError, RuntimeError):  # the client gave up: what the test wants
            pass
        return response


def make_job(job_id: str, **fields: Any) -> dict[str, Any]:
    """A valid JobView dict with sensible defaults; `fields` override them."""
    now = datetime.now(UTC).isoformat()
    job: dict[str, Any] = {
        "id": job_id,
        "connector_id": "postgres-main",
        "kb_uid": "kb_1",
        "dest_table": "public.orders",
        "mode": "incremental",
        "state": "queued",
        "rows_emitted": 0,
        "created_at": now,
        "updated_at": now,
        "duration_ms": None,
        "finished_at": None,
        "message": None,
        "rows_per_sec": None,
        "started_at": None,
        "sync_id": "sync_1",
    }
    job.update(fields)
    return job
