"""`/jobs` that helps, end to end (signed form posts, FakeTimbal, the reply at FakeSlack):
the filter in the header, a state class named a class, an unknown state answered with what
there is, an unknown connector with the closest ids, and the items Timbal's answer held that
could not be read. The poller logs that count too."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from bot.app.config import load_settings
from bot.app.metrics import Metrics
from bot.app.runtime import Runtime, build_poller, build_timbal, running
from storage.keys import Keys
from tests.fakes import FakeSlack, FakeTimbal, make_job
from tests.replica_helpers import alive, identity
from tests.slack_requests import post, slash_command

SIGNING_SECRET = "test-signing-secret"


@pytest.fixture
async def rt(bot_env: dict[str, str], redis_url: str) -> AsyncIterator[Runtime]:
    settings = load_settings(port=0, redis_url=redis_url, host="127.0.0.1")
    async with running(settings, poller=False, notifier=False) as runtime:
        yield runtime


def seed(fake_timbal: FakeTimbal) -> None:
    done = "2025-03-01T10:05:00Z"
    fake_timbal.jobs = [
        make_job("j-run", state="running", started_at="2025-03-01T11:00:00Z"),
        make_job("j-fail", state="failed", finished_at=done, message="disk full"),
        make_job("j-err", state="error", finished_at=done, connector_id="stripe-payments"),
        make_job("j-ok", state="succeeded", finished_at=done, connector_id="s3-archive"),
    ]


async def ask(rt: Runtime, fake_slack: FakeSlack, text: str) -> dict[str, Any]:
    request = slash_command(
        text=text, response_url=fake_slack.response_url("r"), signing_secret=SIGNING_SECRET
    )
    async with httpx.AsyncClient() as http:
        ack = await post(http, rt.base_url + "/slack/events", request)
    assert ack.status_code == 200
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) == 1)
    body: dict[str, Any] = fake_slack.calls_to("response_url")[0].body
    return body


def header(body: dict[str, Any]) -> str:
    text: str = body["blocks"][0]["text"]["text"]
    return text


async def test_the_header_shows_a_state_filter(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    body = await ask(rt, fake_slack, "state=running")
    assert header(body) == "Jobs · org org_test · state running"
    assert "· state `running` (4 in all)" in json.dumps(body["blocks"], ensure_ascii=False)


async def test_a_state_class_is_named_a_class_with_its_states(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    body = await ask(rt, fake_slack, "state=failed")
    assert header(body) == "Jobs · org org_test · failures: error, failed"
    rendered = json.dumps(body["blocks"], ensure_ascii=False)
    assert "Showing 2 of 2 jobs · failures: `error`, `failed` (4 in all)" in rendered
    assert "with state `failed`" not in rendered


async def test_an_unknown_state_names_the_states_seen_and_the_classes(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    body = await ask(rt, fake_slack, "state=bogus")
    assert body["text"].startswith(
        "No job here has state `bogus`. "
        "States in this listing: `error`, `failed`, `running`, `succeeded`. "
        "Or filter by a class: `failed` (failures), `active` (active), "
        "`succeeded` (successes), `cancelled` (cancellations), `other` (other finished states)."
    )


async def test_an_unknown_connector_suggests_the_closest_ids(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    body = await ask(rt, fake_slack, "stripe-paymnts")
    assert body["text"] == "No jobs for connector `stripe-paymnts`. Did you mean `stripe-payments`?"
    assert [r["query"] for r in fake_timbal.requests] == [{"connector_id": "stripe-paymnts"}, {}]


async def test_a_connector_like_none_suggests_nothing(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    body = await ask(rt, fake_slack, "zzzz")
    assert body["text"] == "No jobs for connector `zzzz`."


def with_one_unreadable(fake_timbal: FakeTimbal) -> None:
    seed(fake_timbal)
    broken = make_job("j-broken")
    del broken["state"]  # not the documented shape: skipped and logged
    fake_timbal.jobs.append(broken)


SKIPPED = "1 item in Timbal's answer could not be read (logged)."


async def test_jobs_says_what_could_not_be_read(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    with_one_unreadable(fake_timbal)
    body = await ask(rt, fake_slack, "")
    assert body["text"].startswith("4 jobs in org `org_test`")
    assert body["text"].endswith(SKIPPED)
    assert SKIPPED in body["blocks"][-1]["elements"][0]["text"]


async def test_an_empty_listing_still_says_what_could_not_be_read(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    with_one_unreadable(fake_timbal)
    body = await ask(rt, fake_slack, "state=bogus")
    assert body["text"].endswith(SKIPPED)


async def test_the_poller_logs_the_count_each_cycle(
    bot_env: dict[str, str],
    redis_client: aioredis.Redis,
    fake_timbal: FakeTimbal,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with_one_unreadable(fake_timbal)
    settings = load_settings()
    async with build_timbal(settings) as timbal:
        who = identity("test")
        await alive(redis_client, Keys(settings.redis_prefix, settings.timbal_org_id), who)
        poller = build_poller(
            settings, redis=redis_client, timbal=timbal, metrics=Metrics(), identity=who
        )
        with caplog.at_level(logging.INFO, logger="bot.alerts.poller"):
            await poller.run_once()
            await poller.run_once()
    cycles = [r.getMessage() for r in caplog.records if r.getMessage().startswith("poll org=")]
    assert len(cycles) == 2
    assert all("jobs=4 " in line and line.endswith(" skipped=1") for line in cycles), cycles
