"""Shared fixtures: a real redis-server of our own, fake Slack and Timbal over real HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from tests.fakes import FakeSlack, FakeTimbal


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A redis-server this test session owns: its own port, its own temp dir, no persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.exit("redis-server is not installed (the CI script installs it)", returncode=3)
        self.dir = Path(tempfile.mkdtemp(prefix="tjb-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


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
    }
    for name in list(os.environ):
        if name.startswith(("TIMBAL_", "SLACK_", "REDIS_")) or name in ("ALERT_CHANNEL", "PORT"):
            monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
