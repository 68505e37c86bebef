"""`/jobs` end to end: signed form posts to the running bot over HTTP, FakeTimbal behind it,
the reply read at FakeSlack's response URL."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from slack_sdk.webhook import WebhookResponse

from bot.app.config import load_settings
from bot.app.runtime import Runtime, running
from bot.jobs.listing import RenderedMessage
from bot.timbal import TimbalAuthError, TimbalBadResponse, TimbalError, TimbalUnavailable
from handlers import SORRY
from handlers.commands.jobs import ReplyFailed, describe_failure, reply
from tests.fakes import Call, FakeSlack, FakeTimbal, make_job
from tests.slack_requests import form_fields, post, slash_command
from tests.waiting import wait_until

SIGNING_SECRET = "test-signing-secret"  # the bot_env fixture's


@pytest.fixture
async def rt(bot_env: dict[str, str], redis_url: str) -> AsyncIterator[Runtime]:
    assert bot_env["SLACK_SIGNING_SECRET"] == SIGNING_SECRET
    settings = load_settings(port=0, redis_url=redis_url, host="127.0.0.1")
    async with running(settings, poller=False, notifier=False) as runtime:
        yield runtime


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def send(
    rt: Runtime,
    http: httpx.AsyncClient,
    fake_slack: FakeSlack,
    text: str,
    **options: Any,
) -> httpx.Response:
    request = slash_command(
        text=text,
        response_url=fake_slack.response_url("r1"),
        signing_secret=SIGNING_SECRET,
        **options,
    )
    assert form_fields(request)["text"] == text
    return await post(http, rt.base_url + "/slack/events", request)


async def reply_to(
    rt: Runtime, http: httpx.AsyncClient, fake_slack: FakeSlack, text: str
) -> dict[str, Any]:
    """Send `/jobs text`, check the ack, wait for the reply at the response URL."""
    ack = await send(rt, http, fake_slack, text)
    assert ack.status_code == 200
    assert ack.text == ""  # an empty ack: the answer comes through the response URL
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 1)
    (call,) = fake_slack.calls_to("response_url")
    assert call.body["response_type"] == "ephemeral"
    assert call.body["replace_original"] is False
    return call.body


def blocks_text(body: dict[str, Any]) -> str:
    return json.dumps(body.get("blocks"), ensure_ascii=False)


def outcome_count(rt: Runtime, outcome: str) -> float:
    value = rt.metrics.registry.get_sample_value("tjb_slash_commands_total", {"outcome": outcome})
    return value or 0.0


def latency_count(rt: Runtime) -> float:
    value = rt.metrics.registry.get_sample_value("tjb_slash_command_duration_seconds_count")
    return value or 0.0


def seed(fake_timbal: FakeTimbal) -> None:
    fake_timbal.jobs = [
        make_job("j-run", state="running", started_at="2025-03-01T11:00:00Z"),
        make_job(
            "j-fail",
            state="failed",
            started_at="2025-03-01T10:00:00Z",
            finished_at="2025-03-01T10:05:00Z",
            message="<!channel> disk full & <https://evil.example|click here>",
        ),
        make_job("j-ok", state="succeeded", finished_at="2025-03-01T09:00:00Z", duration_ms=5),
        make_job("j-other", connector_id="s3-archive", state="succeeded"),
    ]


# --- the listing ---------------------------------------------------------------------


async def test_jobs_lists_the_org(
    rt: Runtime, http: httpx.AsyncClient, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    body = await reply_to(rt, http, fake_slack, "")
    rendered = blocks_text(body)
    assert "*4 jobs* · :x: 1 failed · :arrows_counterclockwise: 1 running" in rendered
    assert ":white_check_mark: 2 succeeded" in rendered
    for job_id in ("j-run", "j-fail", "j-ok", "j-other"):
        assert f"job `{job_id}`" in rendered
    assert body["text"].startswith("4 jobs in org `org_test`: 1 failed · 1 running · 2 succeeded")
    # The hostile failure message is shown, escaped: it cannot ping or forge a link.
    assert "&lt;!channel&gt; disk full &amp; &lt;https://evil.example|click here&gt;" in rendered
    assert "<!channel>" not in rendered and "<https://evil" not in rendered
    (request,) = fake_timbal.requests
    assert request["query"] == {}
    assert request["authorization"] == f"Bearer {fake_timbal.api_key}"
    await wait_until(lambda: outcome_count(rt, "ok") == 1)
    await wait_until(lambda: latency_count(rt) == 1)


async def test_jobs_for_one_connector_filters_at_the_api(
    rt: Runtime, http: httpx.AsyncClient, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    body = await reply_to(rt, http, fake_slack, "  s3-archive  ")
    (request,) = fake_timbal.requests
    assert request["query"] == {"connector_id": "s3-archive"}
    rendered = blocks_text(body)
    assert "job `j-other`" in rendered and "job `j-run`" not in rendered
    assert "*1 job* · :white_check_mark: 1 succeeded" in rendered
    assert "Jobs · connector s3-archive" in rendered


async def test_state_filter_and_limit(
    rt: Runtime, http: httpx.AsyncClient, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    body = await reply_to(rt, http, fake_slack, "limit=1 state=succeeded")
    rendered = blocks_text(body)
    assert rendered.count("job `j-") == 1
    assert "Showing 1 of 2 jobs · successes: `succeeded` (4 in all)" in rendered


async def test_empty_listing(
    rt: Runtime, http: httpx.AsyncClient, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    body = await reply_to(rt, http, fake_slack, "postgres-main")
    assert body["text"] == "No jobs for connector `postgres-main`."
    assert "No jobs for connector `postgres-main`." in blocks_text(body)


# --- usage -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("help", None),
        ("a b", "Give at most one connector id (got `a`, `b`)."),
        ("limit=99", "`limit` must be a whole number from 1 to 25 (got `99`)."),
        ("foo=bar", "Unknown option `foo=`"),
        ("<@U123|bob>", "`&lt;@U123|bob&gt;` is a user mention, not a connector id."),
        ("&lt;script&gt;", "A connector id cannot contain `&lt;`, `&gt;` or `&amp;`"),
    ],
)
async def test_help_and_bad_input_get_the_usage(
    rt: Runtime,
    http: httpx.AsyncClient,
    fake_slack: FakeSlack,
    fake_timbal: FakeTimbal,
    text: str,
    reason: str | None,
) -> None:
    body = await reply_to(rt, http, fake_slack, text)
    rendered = blocks_text(body)
    assert "*Usage:* `/jobs [connector] [state=&lt;state&gt;] [limit=&lt;n&gt;]`" in rendered
    if reason is None:
        assert ":warning:" not in rendered
    else:
        assert f":warning: {reason}" in rendered
    assert fake_timbal.requests == []  # nothing to ask Timbal
    await wait_until(lambda: outcome_count(rt, "usage") == 1)


# --- Timbal's failures -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inject", "outcome", "sentence"),
    [
        (
            {"status": 403, "body": '{"error": "forbidden"}'},
            "forbidden",
            "The bot's Timbal API key cannot list jobs for org `org_test`.",
        ),
        (
            {"status": 401, "body": '{"error": "unauthorized"}'},
            "unauthorized",
            "Timbal rejected the bot's API key; ask an admin to check TIMBAL_API_KEY.",
        ),
        (
            {"status": 503, "body": "upstream down", "content_type": "text/plain", "times": 20},
            "unavailable",
            "Timbal is not answering right now; try again in a minute.",
        ),
        (
            {"status": 200, "body": "<html>not json</html>", "content_type": "text/html"},
            "bad_response",
            "Timbal answered with something unexpected; the bot logged the details.",
        ),
        (
            {"status": 200, "body": '{"jobs": [{"id": 1}]}'},
            "bad_response",
            "Timbal answered with something unexpected; the bot logged the details.",
        ),
    ],
)
async def test_timbal_errors_become_one_sentence(
    rt: Runtime,
    http: httpx.AsyncClient,
    fake_slack: FakeSlack,
    fake_timbal: FakeTimbal,
    inject: dict[str, Any],
    outcome: str,
    sentence: str,
) -> None:
    fake_timbal.inject(**inject)
    body = await reply_to(rt, http, fake_slack, "")
    assert body["text"] == sentence
    assert body["blocks"] == [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f":warning: {sentence}", "verbatim": True},
        }
    ]
    await wait_until(lambda: outcome_count(rt, outcome) == 1)
    assert outcome_count(rt, "ok") == 0


async def test_an_unexpected_error_is_logged_and_the_user_told(
    rt: Runtime,
    http: httpx.AsyncClient,
    fake_slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(connector_id: str | None = None) -> asyncio.Future[Any]:
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        answer.set_exception(RuntimeError("a bug, not a Timbal error"))
        return answer

    monkeypatch.setattr(rt.listings, "ask", broken)
    with caplog.at_level(logging.ERROR, logger="handlers"):
        body = await reply_to(rt, http, fake_slack, "")
    assert body["text"] == SORRY
    assert "blocks" not in body
    (record,) = [r for r in caplog.records if r.name == "handlers"]
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert "/jobs" in record.getMessage()
    assert SIGNING_SECRET not in caplog.text and "deprecated-verification-token" not in caplog.text
    await wait_until(lambda: outcome_count(rt, "error") == 1)


async def test_an_early_ask_that_raises_still_acks_and_the_listener_answers(
    rt: Runtime,
    http: httpx.AsyncClient,
    fake_slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The HTTP server's early ask is an optimisation: if it raises, the ack still goes out,
    and the listener's own ask meets the same error, which the user is told about."""

    def broken(connector_id: str | None = None) -> asyncio.Future[Any]:
        raise RuntimeError("a bug in the early ask")

    monkeypatch.setattr(rt.listings, "ask", broken)
    with caplog.at_level(logging.ERROR):
        body = await reply_to(rt, http, fake_slack, "")  # checks the empty 200 ack
    assert body["text"] == SORRY
    assert "could not ask Timbal ahead of the listener" in caplog.text


async def test_a_refused_reply_is_retried_as_text_then_reported(
    rt: Runtime, http: httpx.AsyncClient, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    await reply_to(rt, http, fake_slack, "")  # Bolt checks the token once (auth.test) first
    fake_slack.down = True  # from now on the response URL answers 503 to everything
    ack = await send(rt, http, fake_slack, "")
    assert ack.status_code == 200
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 4)
    _, blocks, plain, sorry = fake_slack.calls_to("response_url")
    assert "blocks" in blocks.body
    assert "blocks" not in plain.body and plain.body["text"] == blocks.body["text"]
    assert sorry.body["text"] == SORRY
    await wait_until(lambda: outcome_count(rt, "error") == 1)
    assert outcome_count(rt, "ok") == 1  # the first one


# --- Slack's request signing ------------------------------------------------------------


@pytest.mark.parametrize("bad", [{"forge": True}, {"stale": True}])
async def test_unsigned_or_stale_requests_are_refused(
    rt: Runtime,
    http: httpx.AsyncClient,
    fake_slack: FakeSlack,
    fake_timbal: FakeTimbal,
    bad: dict[str, bool],
) -> None:
    seed(fake_timbal)
    refused = await send(rt, http, fake_slack, "postgres-main", **bad)
    assert refused.status_code == 401
    assert fake_timbal.requests == []
    # A genuine request right after is answered, and is the only one that reached Timbal.
    await reply_to(rt, http, fake_slack, "")
    assert [r["query"] for r in fake_timbal.requests] == [{}]
    assert len(fake_slack.calls_to("response_url")) == 1


# --- the ack comes first ------------------------------------------------------------------


async def test_a_slow_timbal_still_gets_the_ack_first(
    rt: Runtime, http: httpx.AsyncClient, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    fake_timbal.delay = 4.0
    ack = await send(rt, http, fake_slack, "")
    acked_at = time.monotonic()
    assert ack.status_code == 200 and ack.text == ""
    assert fake_slack.calls_to("response_url") == []  # nothing answered yet when the ack came
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 1, within=30)
    reply: Call = fake_slack.calls_to("response_url")[0]
    assert reply.at > acked_at
    assert len(fake_timbal.requests) == 1
    assert "*4 jobs*" in blocks_text(reply.body)


# --- the shell's pieces, without HTTP -------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "outcome", "sentence"),
    [
        (TimbalAuthError("x", status=403), "forbidden", "cannot list jobs for org `org_a`."),
        (TimbalAuthError("x", status=401), "unauthorized", "check TIMBAL_API_KEY."),
        (TimbalUnavailable("x", status=503), "unavailable", "try again in a minute."),
        (TimbalBadResponse("x"), "bad_response", "the bot logged the details."),
        (TimbalError("x"), "timbal_error", "Timbal could not list the jobs;"),
    ],
)
def test_describe_failure(error: TimbalError, outcome: str, sentence: str) -> None:
    got_outcome, got_sentence = describe_failure(error, "org_a")
    assert got_outcome == outcome
    assert sentence in got_sentence


class ScriptedRespond:
    """Stands in for Bolt's `respond`: answers each call with the next status."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, **kwargs: Any) -> WebhookResponse:
        self.calls.append(kwargs)
        status = self.statuses.pop(0)
        return WebhookResponse(
            url="http://x", status_code=status, body="invalid_blocks", headers={}
        )


MESSAGE = RenderedMessage(text="hello", blocks=[{"type": "divider"}])


async def test_reply_sends_blocks_once_when_accepted() -> None:
    respond = ScriptedRespond(200)
    await reply(respond, MESSAGE)  # type: ignore[arg-type]
    assert respond.calls == [
        {
            "response_type": "ephemeral",
            "text": "hello",
            "blocks": [{"type": "divider"}],
            "replace_original": False,
        }
    ]


async def test_reply_falls_back_to_text_when_blocks_are_refused() -> None:
    respond = ScriptedRespond(400, 200)
    await reply(respond, MESSAGE)  # type: ignore[arg-type]
    assert [("blocks" in c, c["text"]) for c in respond.calls] == [
        (True, "hello"),
        (False, "hello"),
    ]


async def test_reply_raises_when_even_text_is_refused() -> None:
    respond = ScriptedRespond(404, 404)
    with pytest.raises(ReplyFailed) as failed:
        await reply(respond, MESSAGE)  # type: ignore[arg-type]
    assert failed.value.status == 404
