"""What a failed Slack call means (a table), and the sender's history search and metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.alerts.failure import DEFAULT_RETRY_AFTER, FailureKind, Scope, SlackFailure
from bot.alerts.send import EVENT_TYPE, SearchPage, SlackSender, metadata, posted_actions
from bot.alerts.slack_errors import classify

REFUSED_KEY = ConnectionKey("slack.test", 443, True, True, None, None, None)


def api_error(status: int, data: Any, headers: dict[str, str] | None = None) -> SlackApiError:
    client = AsyncWebClient(token="xoxb-x")
    response = AsyncSlackResponse(
        client=client,
        http_verb="POST",
        api_url="https://slack.test/api/chat.postMessage",
        req_args={},
        data=data,
        headers=headers or {},
        status_code=status,
    )
    return SlackApiError("failed", response)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (api_error(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "2"}),
         SlackFailure(FailureKind.RATE_LIMITED, "ratelimited", 2.0)),
        (api_error(429, {"ok": False}, {"retry-after": "30"}),
         SlackFailure(FailureKind.RATE_LIMITED, "http_429", 30.0)),
        (api_error(429, "", {"Retry-After": "soon"}),
         SlackFailure(FailureKind.RATE_LIMITED, "http_429", DEFAULT_RETRY_AFTER)),
        (api_error(429, "", {}),
         SlackFailure(FailureKind.RATE_LIMITED, "http_429", DEFAULT_RETRY_AFTER)),
        (api_error(429, "", {"Retry-After": "99999"}),
         SlackFailure(FailureKind.RATE_LIMITED, "http_429", 3600.0)),
        (api_error(503, "upstream connect error"),
         SlackFailure(FailureKind.RETRY, "http_503", maybe_sent=True)),
        (api_error(200, {"ok": False, "error": "internal_error"}),
         SlackFailure(FailureKind.RETRY, "internal_error", maybe_sent=True)),
        (api_error(200, {"ok": False, "error": "invalid_blocks"}),
         SlackFailure(FailureKind.INVALID, "invalid_blocks")),
        (api_error(200, {"ok": False, "error": "msg_too_long"}),
         SlackFailure(FailureKind.INVALID, "msg_too_long")),
        (api_error(200, {"ok": False, "error": "channel_not_found"}),
         SlackFailure(FailureKind.PERMANENT, "channel_not_found", scope=Scope.CHANNEL)),
        (api_error(200, {"ok": False, "error": "is_archived"}),
         SlackFailure(FailureKind.PERMANENT, "is_archived", scope=Scope.CHANNEL)),
        (api_error(200, {"ok": False, "error": "restricted_action_read_only_channel"}),
         SlackFailure(
             FailureKind.PERMANENT, "restricted_action_read_only_channel", scope=Scope.CHANNEL
         )),
        # A reply refused for being a reply condemns its thread, not the channel.
        (api_error(200, {"ok": False, "error": "restricted_action_non_threadable_channel"}),
         SlackFailure(FailureKind.PERMANENT, "restricted_action_non_threadable_channel")),
        (api_error(200, {"ok": False, "error": "restricted_action_thread_locked"}),
         SlackFailure(FailureKind.PERMANENT, "restricted_action_thread_locked")),
        (api_error(200, {"ok": False, "error": "thread_not_found"}),
         SlackFailure(FailureKind.PERMANENT, "thread_not_found")),
        (api_error(200, {"ok": False, "error": "invalid_auth"}),
         SlackFailure(FailureKind.PERMANENT, "invalid_auth", scope=Scope.WORKSPACE)),
        (api_error(200, {"ok": False, "error": "missing_scope"}),
         SlackFailure(FailureKind.PERMANENT, "missing_scope", scope=Scope.WORKSPACE)),
        (api_error(200, {"ok": False, "error": "something_new"}),
         SlackFailure(FailureKind.PERMANENT, "something_new")),
        (aiohttp.ClientConnectionError("refused"),
         SlackFailure(FailureKind.RETRY, "ClientConnectionError", maybe_sent=True)),
        (TimeoutError(), SlackFailure(FailureKind.RETRY, "TimeoutError", maybe_sent=True)),
        (ConnectionResetError(),
         SlackFailure(FailureKind.RETRY, "ConnectionResetError", maybe_sent=True)),
        (aiohttp.ClientConnectorError(REFUSED_KEY, OSError(111, "refused")),  # nothing was sent
         SlackFailure(FailureKind.RETRY, "ClientConnectorError", maybe_sent=False)),
    ],
)  # fmt: skip
def test_classify(error: BaseException, expected: SlackFailure) -> None:
    assert classify(error) == expected


def test_other_exceptions_are_not_slack_failures() -> None:
    assert classify(ValueError("a bug")) is None


def test_posted_actions_reads_only_our_metadata() -> None:
    assert posted_actions({"metadata": metadata(["a|C|post"], ["a"])}) == ["a|C|post"]
    assert posted_actions({"metadata": metadata(["a|C|post", "b|C|post"], ["a", "b"])}) == [
        "a|C|post",
        "b|C|post",
    ]
    other = {"event_type": "someone_else", "event_payload": {"actions": ["a|C|post"]}}
    assert posted_actions({"metadata": other}) == []
    assert posted_actions({"metadata": "junk"}) == []
    assert posted_actions({"metadata": {"event_type": EVENT_TYPE, "event_payload": "x"}}) == []
    assert posted_actions({}) == []


async def test_history_search_is_one_page_at_a_time_and_follows_the_cursor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pages: dict[str | None, dict[str, Any]] = {
        None: {
            "messages": [
                {"ts": "3.0", "metadata": metadata(["x"], ["x"])},
                {"ts": "2.0", "text": "someone"},
            ],
            "response_metadata": {"next_cursor": "p2"},
        },
        "p2": {"messages": [{"ts": "1.0", "metadata": metadata(["a", "b"], ["a", "b"])}]},
    }
    asked: list[dict[str, Any]] = []

    async def history(**kwargs: Any) -> dict[str, Any]:
        asked.append(kwargs)
        return pages[kwargs.get("cursor")]

    sender = SlackSender(AsyncWebClient(token="xoxb-x"), timeout=5)
    monkeypatch.setattr(sender._slack, "conversations_history", history)
    oldest = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp() * 1000)
    first = await sender.search("C1", {"a", "x"}, oldest_ms=oldest)
    assert first == SearchPage(found={"x": "3.0"}, cursor="p2")
    second = await sender.search("C1", {"a", "x"}, oldest_ms=oldest, cursor="p2")
    assert second == SearchPage(found={"a": "1.0"}, cursor=None)
    assert asked[0]["include_all_metadata"] is True and asked[0]["inclusive"] is True
    assert asked[0]["oldest"] == f"{oldest / 1000:.6f}"


def test_the_sender_never_retries_behind_our_back() -> None:
    client = AsyncWebClient(token="xoxb-x")
    assert client.retry_handlers  # slack_sdk's default: a connection-error retry
    sender = SlackSender(client, timeout=7)
    assert sender._slack.retry_handlers == []
    assert sender._slack.timeout == 7
    assert client.retry_handlers  # the shared client (Bolt's) is left as it was
    assert EVENT_TYPE == "timbal_job_alert"
