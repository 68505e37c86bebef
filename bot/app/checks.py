"""`timbal-jobs-bot check`: each dependency checked on its own, with a reason either way."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio.cluster import RedisCluster
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts.slack_errors import error_code
from bot.app.config import Settings, SlackMode
from bot.reach import unreachable
from bot.timbal import TimbalClient, TimbalError
from storage.connection import Redis

MIN_REDIS = (6, 2)  # XAUTOCLAIM and GETDEL arrived in 6.2


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.name}: {self.detail}"


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


EMBEDDED = "embedded, not persisted (set REDIS_URL for production)"


async def check_redis(redis: Redis, *, url: str | None) -> CheckResult:
    """`url` None: the embedded in-process store (nothing to reach, and it has no INFO).
    The line says the mode: a standalone server, or a cluster and how many masters it has."""
    if url is None:
        return CheckResult("redis", True, EMBEDDED)
    try:
        if isinstance(redis, RedisCluster):
            await asyncio.wait_for(redis.initialize(), timeout=5)
            masters = redis.get_primaries()
            info = await asyncio.wait_for(
                redis.info("server", target_nodes=RedisCluster.RANDOM), timeout=5
            )
        else:
            masters = []
            info = await asyncio.wait_for(redis.info("server"), timeout=5)
    except Exception as exc:
        return CheckResult("redis", False, unreachable(url, exc))
    version = str(info.get("redis_version", "0"))
    if _version(version) < MIN_REDIS:
        need = ".".join(map(str, MIN_REDIS))
        return CheckResult("redis", False, f"version {version} is too old (need ≥ {need})")
    mode = f"cluster of {len(masters)} masters" if masters else "standalone"
    return CheckResult("redis", True, f"reachable ({mode}), version {version}")


async def check_timbal(timbal: TimbalClient, org_id: str) -> CheckResult:
    try:
        jobs = await timbal.list_jobs()
    except TimbalError as exc:
        return CheckResult("timbal", False, f"org {org_id}: {exc.reason}")
    return CheckResult("timbal", True, f"org {org_id} answers ({len(jobs)} jobs listed)")


async def check_slack(slack: AsyncWebClient) -> CheckResult:
    try:
        auth = await slack.auth_test()
    except SlackApiError as exc:
        return CheckResult("slack", False, f"auth.test failed: {error_code(exc)}")
    except Exception as exc:
        return CheckResult("slack", False, unreachable(slack.base_url, exc))
    return CheckResult(
        "slack",
        True,
        f"authenticated as {auth.get('user')} ({auth.get('user_id')}) "
        f"in team {auth.get('team')} ({auth.get('team_id')})",
    )


async def check_socket_mode(slack: AsyncWebClient, app_token: str) -> CheckResult:
    """Socket Mode needs an app-level token that may open connections."""
    try:
        await slack.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        error = error_code(exc)
        return CheckResult("slack socket mode", False, f"apps.connections.open failed: {error}")
    except Exception as exc:
        return CheckResult("slack socket mode", False, unreachable(slack.base_url, exc))
    return CheckResult("slack socket mode", True, "SLACK_APP_TOKEN may open a connection")


async def run_checks(
    settings: Settings, *, redis: Redis, timbal: TimbalClient, slack: AsyncWebClient
) -> list[CheckResult]:
    checks = [
        check_redis(redis, url=settings.redis_url),
        check_timbal(timbal, settings.timbal_org_id),
        check_slack(slack),
    ]
    if settings.effective_slack_mode is SlackMode.SOCKET and settings.slack_app_token is not None:
        checks.append(check_socket_mode(slack, settings.slack_app_token.get_secret_value()))
    return list(await asyncio.gather(*checks))
