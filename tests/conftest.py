"""Shared fixtures: a real redis-server of our own, fake Slack and Timbal over real HTTP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from storage.connection import Redis
from tests.fakes import FakeSlack, FakeTimbal
from tests.redis_backends import BACKENDS, Backend
from tests.redis_cluster import RedisClusterServers
from tests.redis_server import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster_servers(redis_server: RedisServer) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(redis_server.binary)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster_servers: RedisClusterServers) -> str:
    """Our own 3-master cluster, emptied before each test."""
    redis_cluster_servers.flush()
    return redis_cluster_servers.url


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """Our own server, emptied before each test (it is never the user's Redis)."""
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fake_timbal() -> AsyncIterator[FakeTimbal]:
    fake = await FakeTimbal().start()
    yield fake
    await fake.stop()


@pytest.fixture
def bot_env(
    monkeypatch: pytest.MonkeyPatch, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> dict[str, str]:
    """An environment that points every client at the fakes (HTTP mode)."""
    env = {
        "TIMBAL_API_URL": fake_timbal.base_url,
        "TIMBAL_API_KEY": fake_timbal.api_key,
        "TIMBAL_ORG_ID": fake_timbal.org_id,
        "SLACK_BOT_TOKEN": fake_slack.bot_token,
        "SLACK_SIGNING_SECRET": "test-signing-secret",
        "SLACK_API_URL": fake_slack.base_url,
        "SLACK_MODE": "http",
        "ALERT_CHANNEL": "C0ALERTS",
        # Hung-run detection off unless a test turns it on: many tests script runs at fixed
        # instants, which the bot's real clock would, some day, find running long.
        "STALL_AFTER_SECONDS": "0",
        "LONG_RUNNING_AFTER_SECONDS": "0",
    }
    for name in list(os.environ):
        if name.startswith(("TIMBAL_", "SLACK_", "REDIS_")) or name in ("ALERT_CHANNEL", "PORT"):
            monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Backend]:
    """The storage tests run on the real server, a real cluster and the embedded store."""
    url = redis_url
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
    made = Backend(request.param, url)
    yield made
    await made.aclose()


@pytest.fixture
def r(backend: Backend) -> Redis:
    return backend.client()
