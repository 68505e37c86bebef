"""Start and stop in every state, as a real process: Slack unreachable at start-up, in both
modes. The bot stays alive (/healthz), says it is not ready and why (/readyz: slack), retries
with one log line an attempt, and a SIGTERM or Ctrl-C ends it within 2 s, without a traceback.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fakes import FakeTimbal, make_job
from tests.proc import Running, clean_env, spawn_cli
from tests.redis_server import free_port
from tests.waiting import wait_until

STOP_WITHIN = 2.0


@pytest.fixture
async def silent_slack() -> AsyncIterator[str]:
    """A 'Slack' that accepts connections and never answers (a black hole): the worst case
    for start-up, since every request waits for its own timeout."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/api/"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def env_for(
    mode: str, slack_url: str, fake_timbal: FakeTimbal, redis_url: str, port: int
) -> dict[str, str]:
    settings = {
        "TIMBAL_API_URL": fake_timbal.base_url,
        "TIMBAL_API_KEY": fake_timbal.api_key,
        "TIMBAL_ORG_ID": fake_timbal.org_id,
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_API_URL": slack_url,
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "POLL_INTERVAL_SECONDS": "1",
    }
    if mode == "http":
        settings |= {"SLACK_MODE": "http", "SLACK_SIGNING_SECRET": "test-signing-secret"}
    else:
        settings |= {"SLACK_APP_TOKEN": "xapp-test-token"}
    return clean_env(**settings)


async def alive_not_ready(bot: Running, port: int) -> dict[str, object]:
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=5) as http:

        async def healthy() -> bool:
            try:
                return (await http.get(f"{base}/healthz")).status_code == 200
            except httpx.TransportError:
                assert bot.proc.returncode is None, bot.output
                return False

        await wait_until(healthy, within=30, what="/healthz answers")
        ready = await http.get(f"{base}/readyz")
    assert ready.status_code == 503
    body: dict[str, object] = ready.json()
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert checks["slack"]["ok"] is False, body
    return body


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_slack_refusing_connections_alive_not_ready_retrying_and_stops_fast(
    fake_timbal: FakeTimbal, redis_url: str, mode: str, sig: signal.Signals
) -> None:
    fake_timbal.jobs = [make_job("j1")]
    slack_port = free_port()  # nothing listens there: connection refused
    port = free_port()
    env = env_for(mode, f"http://127.0.0.1:{slack_port}/api/", fake_timbal, redis_url, port)
    bot = await spawn_cli("run", env=env)
    try:
        await alive_not_ready(bot, port)
        # Retried with back-off, one line an attempt that names the address and the cause.
        await wait_until(
            lambda: bot.output.count("connection refused") >= 2, within=15, what=bot.output
        )
        attempts = [line for line in bot.lines if "Slack:" in line]
        assert all(f"127.0.0.1:{slack_port}" in line for line in attempts), attempts
        started = time.monotonic()
        code = await bot.stop(sig, within=STOP_WITHIN + 3)
        took = time.monotonic() - started
    finally:
        await bot.kill()
    print(f"stopped in {took:.2f}s")  # shown with -s: the figure the report quotes
    assert took < STOP_WITHIN, f"took {took:.2f}s"
    assert code == 0, bot.output
    assert "Traceback" not in bot.output
    assert "timbal-jobs-bot stopped" in bot.output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_a_silent_slack_holds_neither_health_nor_the_signal(
    fake_timbal: FakeTimbal, redis_url: str, silent_slack: str, mode: str, sig: signal.Signals
) -> None:
    """The first attempt at Slack is still waiting for an answer when the signal comes."""
    port = free_port()
    bot = await spawn_cli("run", env=env_for(mode, silent_slack, fake_timbal, redis_url, port))
    try:
        body = await alive_not_ready(bot, port)
        assert "slack" in body["checks"]  # type: ignore[operator]
        started = time.monotonic()
        code = await bot.stop(sig, within=STOP_WITHIN + 3)
        took = time.monotonic() - started
    finally:
        await bot.kill()
    print(f"stopped in {took:.2f}s")  # shown with -s: the figure the report quotes
    assert took < STOP_WITHIN, f"took {took:.2f}s"
    assert code == 0, bot.output
    assert "Traceback" not in bot.output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_the_moment_it_starts_ends_it(
    fake_timbal: FakeTimbal, redis_url: str, silent_slack: str, sig: signal.Signals
) -> None:
    """A signal at once, while Python is still importing the bot: no traceback either."""
    port = free_port()
    bot = await spawn_cli("run", env=env_for("socket", silent_slack, fake_timbal, redis_url, port))
    try:
        started = time.monotonic()
        code = await bot.stop(sig, within=STOP_WITHIN + 3)
        took = time.monotonic() - started
    finally:
        await bot.kill()
    print(f"stopped in {took:.2f}s")  # shown with -s: the figure the report quotes
    assert took < STOP_WITHIN, f"took {took:.2f}s"
    assert code in (0, 130, -sig), bot.output  # 130: Ctrl-C as shells say; -sig: before Python ran
    assert "Traceback" not in bot.output
