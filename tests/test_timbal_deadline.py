"""A Timbal that trickles its answer one byte a second is abandoned at the deadline
(TIMBAL_TIMEOUT_SECONDS for the whole exchange, body included), by the client, by `/jobs`
and by the poller. Without the deadline each of these would wait for the whole trickle:
httpx's timeouts are per read, and a byte a second never trips them."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from bot.app.config import load_settings
from bot.app.metrics import Metrics
from bot.app.runtime import Runtime, build_poller, build_timbal, running
from bot.timbal import TimbalUnavailable
from storage.keys import Keys
from tests.fakes import FakeSlack, FakeTimbal, make_job
from tests.redis_server import free_port
from tests.replica_helpers import alive, identity
from tests.slack_requests import post, slash_command

DEADLINE = 2.0  # as in the issue: a byte a second never trips httpx's per-read timeout
TRICKLE = 1.0  # seconds a byte: a listing of a few jobs takes minutes


async def no_sleep(_: float) -> None:
    return None


def trickling(fake_timbal: FakeTimbal) -> None:
    fake_timbal.jobs = [make_job(f"j{i}") for i in range(3)]
    fake_timbal.trickle = TRICKLE


async def test_the_client_abandons_a_trickle_at_the_deadline(
    bot_env: dict[str, str], fake_timbal: FakeTimbal
) -> None:
    trickling(fake_timbal)
    settings = load_settings(timbal_timeout_seconds=DEADLINE)
    started = time.monotonic()
    async with build_timbal(settings, retries=1, sleep=no_sleep) as client:
        with pytest.raises(TimbalUnavailable, match="did not answer in time") as caught:
            await client.list_jobs()
    took = time.monotonic() - started
    assert len(fake_timbal.requests) == 2  # each attempt has its own deadline
    assert 2 * DEADLINE <= took < 2 * DEADLINE + 2, took
    assert f"no whole answer in {DEADLINE:g}s" in caught.value.reason


@pytest.fixture
async def rt(bot_env: dict[str, str], redis_url: str) -> AsyncIterator[Runtime]:
    settings = load_settings(
        port=0, redis_url=redis_url, host="127.0.0.1", timbal_timeout_seconds=DEADLINE
    )
    async with running(settings, poller=False, notifier=False) as runtime:
        yield runtime


async def test_jobs_answers_at_the_deadline_not_after_the_trickle(
    rt: Runtime, bot_env: dict[str, str], fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    trickling(fake_timbal)
    request = slash_command(
        text="",
        response_url=fake_slack.response_url("r1"),
        signing_secret=bot_env["SLACK_SIGNING_SECRET"],
    )
    async with httpx.AsyncClient() as http:
        ack = await post(http, rt.base_url + "/slack/events", request)
    acked = time.monotonic()
    assert ack.status_code == 200
    # The runtime's client makes 3 attempts of 2 s each with a short back-off between them.
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) == 1, within=15)
    took = time.monotonic() - acked
    (reply,) = fake_slack.calls_to("response_url")
    assert "Timbal is not answering right now" in reply.body["text"]
    assert len(fake_timbal.requests) == 3
    assert took < 3 * DEADLINE + 3, took


async def test_a_poll_cycle_is_abandoned_at_the_deadline(
    bot_env: dict[str, str], redis_client: aioredis.Redis, fake_timbal: FakeTimbal
) -> None:
    trickling(fake_timbal)
    settings = load_settings(timbal_timeout_seconds=DEADLINE)
    started = time.monotonic()
    async with build_timbal(settings, retries=0) as timbal:
        who = identity("test")
        await alive(redis_client, Keys(settings.redis_prefix, settings.timbal_org_id), who)
        poller = build_poller(
            settings, redis=redis_client, timbal=timbal, metrics=Metrics(), identity=who
        )
        with pytest.raises(TimbalUnavailable, match="did not answer in time"):
            await poller.run_once()
    took = time.monotonic() - started
    assert DEADLINE <= took < DEADLINE + 2, took


async def test_a_retry_log_line_names_the_address_and_cause_and_reads_well(
    bot_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = load_settings(timbal_api_url=f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING, logger="bot.timbal"):
        async with build_timbal(settings, retries=1, sleep=no_sleep) as client:
            with pytest.raises(TimbalUnavailable) as caught:
                await client.list_jobs()
    (line,) = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert f"could not be reached at 127.0.0.1:{port} (connection refused); retrying" in line
    assert ".;" not in line
    assert caught.value.reason == (
        f"Timbal could not be reached at 127.0.0.1:{port} (connection refused)."
    )
