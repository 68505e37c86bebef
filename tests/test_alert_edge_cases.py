"""Alert pipeline edge cases, each pinned by a test: Slack's `rate_limited` answer,
a finish time the API fills in after the state, and API text in the notifier's log lines.
Real Redis and FakeSlack over real HTTP, as in the other notifier tests."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.alerts.diff import diff
from bot.alerts.failure import DEFAULT_RETRY_AFTER, FailureKind, SlackFailure
from bot.alerts.slack_errors import classify
from bot.app.metrics import Metrics
from bot.app.serve import serve
from bot.domain.models import Job
from bot.domain.snapshot import JobSnapshot
from bot.domain.states import StateClassifier
from tests.fakes import FakeSlack, make_job
from tests.notifier_helpers import (
    counter,
    dead_letters,
    delivered,
    enqueue,
    job_event,
    make_notifier,
    outbox_empty,
    running,
)
from tests.waiting import wait_until

# --- Slack's `rate_limited` (chat.postMessage's own code, HTTP 200) is a rate limit ----------


def api_error(status: int, data: Any) -> SlackApiError:
    response = AsyncSlackResponse(
        client=AsyncWebClient(token="xoxb-x"),
        http_verb="POST",
        api_url="https://slack.test/api/chat.postMessage",
        req_args={},
        data=data,
        headers={},
        status_code=status,
    )
    return SlackApiError("failed", response)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            api_error(200, {"ok": False, "error": "rate_limited"}),
            SlackFailure(FailureKind.RATE_LIMITED, "rate_limited", DEFAULT_RETRY_AFTER),
        ),
        # "Web API ... intermittently unavailable until the transition is complete"
        (
            api_error(200, {"ok": False, "error": "team_added_to_org"}),
            SlackFailure(FailureKind.RETRY, "team_added_to_org", maybe_sent=True),
        ),
    ],
)
def test_transient_slack_codes_are_not_permanent(
    error: SlackApiError, expected: SlackFailure
) -> None:
    assert classify(error) == expected


async def test_rate_limited_answer_is_retried_not_dead_lettered(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    metrics = Metrics()
    events = [job_event(i) for i in range(2)]
    await enqueue(redis_client, *events)
    fake_slack.fail("chat.postMessage", status=200, error="rate_limited", times=1)
    async with running(await make_notifier(redis_client, fake_slack, metrics=metrics)):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="delivered")
    assert await dead_letters(redis_client) == []
    assert delivered(fake_slack) == [e.event_id for e in events]
    assert counter(metrics, "tjb_slack_ratelimited_total") == 1


# --- a finish time filled in one poll after the terminal state is the same run -------------

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CLASSIFIER = StateClassifier()


def _job(**fields: Any) -> Job:
    fields.setdefault("created_at", T0.isoformat())
    fields.setdefault("updated_at", T0.isoformat())
    fields.setdefault("started_at", (T0 + timedelta(minutes=1)).isoformat())
    return Job.model_validate(make_job("j1", **fields))


def _events_over(*listings: Job) -> list[str]:
    """Event ids raised when the listings are polled one after another (after a baseline)."""
    state: dict[str, JobSnapshot] = {}
    ids: list[str] = []
    for i, job in enumerate(listings):
        now = T0 + timedelta(minutes=10 + i)
        result = diff(state, [job], now, org_id="o", classifier=CLASSIFIER)
        state.update(result.upserts)
        ids += [e.event_id for e in result.events]
    return ids


def test_finished_at_filled_in_after_the_state_alerts_once() -> None:
    finished = (T0 + timedelta(minutes=5)).isoformat()
    ids = _events_over(
        _job(state="running"),
        _job(state="failed"),  # the API set the state first...
        _job(state="failed", finished_at=finished),  # ...and the finish time one poll later
    )
    assert len(ids) == 1, ids


def test_a_rerun_between_polls_after_a_terminal_state_without_finish_time_still_alerts() -> None:
    rerun_start = (T0 + timedelta(minutes=7)).isoformat()
    ids = _events_over(
        _job(state="running"),
        _job(state="failed"),
        _job(
            state="failed",
            started_at=rerun_start,
            finished_at=(T0 + timedelta(minutes=8)).isoformat(),
        ),
    )
    assert len(ids) == 2, ids


# --- API text never splits a log line ------------------------------------------------------


async def test_job_ids_with_newlines_stay_on_one_log_line(
    redis_client: aioredis.Redis, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = job_event(1, id="j1\n12:00:00 CRITICAL forged line")
    await enqueue(redis_client, hostile)
    caplog.set_level(logging.INFO, logger="bot.alerts.notifier")
    async with running(await make_notifier(redis_client, fake_slack)):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="delivered")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("bot.alerts.notifier")]
    assert any(line.startswith("alert sent") for line in lines)
    assert all("\n" not in line for line in lines), lines


# --- an answer that is not Slack's JSON gives no verdict: retry, never dead-letter ----------


@pytest.mark.parametrize("status", [200, 502])
async def test_an_unparsable_json_answer_is_retried(status: int) -> None:
    async def garbled(request: web.Request) -> web.Response:
        return web.Response(status=status, body=b"{not json", content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/{method}", garbled)
    runner, port = await serve(app, "127.0.0.1", 0)
    try:
        client = AsyncWebClient(token="xoxb-x", base_url=f"http://127.0.0.1:{port}/api/")
        client.retry_handlers = []
        with pytest.raises(SlackApiError) as caught:
            await client.chat_postMessage(channel="C1", text="hi")
    finally:
        await runner.cleanup()
    failure = classify(caught.value)
    assert failure is not None
    assert failure.kind is FailureKind.RETRY, failure
