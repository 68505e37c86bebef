"""`GET /healthz`, `GET /readyz` and `GET /metrics`, served in both Slack modes.

- healthz: the process is up (what container health checks ask).
- readyz: Redis answers; on a replica that polls, a poll succeeded within three intervals;
  in Socket Mode, Slack is connected; Slack delivery is not paused (a revoked token, a
  missing scope). 503 with the failing check and its reason otherwise.
- metrics: Prometheus text from the runtime's own registry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import web

from bot.app.metrics import Metrics
from storage.connection import Redis
from storage.gates import parse_workspace_pause
from storage.heartbeat import last_poll
from storage.keys import Keys

Check = tuple[bool, str]


@dataclass
class Readiness:
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.checks.values())


@dataclass
class Health:
    """What the endpoints look at. `socket_connected` is None outside Socket Mode;
    `before_metrics` refreshes gauges that are read, not pushed (the outbox backlog)."""

    redis: Redis
    keys: Keys
    metrics: Metrics
    replica: str
    clock: Callable[[], datetime]
    poll_interval: float | None  # None: this replica does not poll
    socket_connected: Callable[[], Awaitable[bool]] | None = None
    before_metrics: Callable[[], Awaitable[None]] | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_text)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "replica": self.replica})

    async def readiness(self) -> Readiness:
        report = Readiness()
        try:
            await asyncio.wait_for(self.redis.ping(), timeout=2)
            report.checks["redis"] = (True, "reachable")
        except Exception as exc:
            report.checks["redis"] = (False, f"unreachable: {type(exc).__name__}")
        if self.poll_interval is not None:
            report.checks["poll"] = await self._poll_fresh(self.poll_interval)
        report.checks["delivery"] = await self._delivery()
        if self.socket_connected is not None:
            connected = await self.socket_connected()
            report.checks["slack"] = (connected, "connected" if connected else "not connected")
        return report

    async def _poll_fresh(self, interval: float) -> Check:
        try:
            when = await last_poll(self.redis, self.keys)
        except Exception as exc:
            return False, f"unknown: {type(exc).__name__}"
        if when is None:
            return False, "no successful poll yet"
        age = (self.clock() - when).total_seconds()
        limit = 3 * interval
        return age <= limit, f"last successful poll {age:.0f}s ago (limit {limit:.0f}s)"

    async def _delivery(self) -> Check:
        try:
            raw = await self.redis.get(self.keys.slack_pause)
            paused = parse_workspace_pause(None if raw is None else str(raw))
        except Exception as exc:
            return False, f"unknown: {type(exc).__name__}"
        if paused is None:
            return True, "not paused"
        return False, f"paused: Slack answered {paused.reason}; {paused.hint}"

    async def readyz(self, request: web.Request) -> web.Response:
        report = await self.readiness()
        body = {name: {"ok": ok, "detail": detail} for name, (ok, detail) in report.checks.items()}
        return web.json_response(
            {"ready": report.ok, "checks": body}, status=200 if report.ok else 503
        )

    async def metrics_text(self, request: web.Request) -> web.Response:
        if self.before_metrics is not None:
            with contextlib.suppress(Exception):  # stale gauges beat a failed scrape
                await self.before_metrics()
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )
