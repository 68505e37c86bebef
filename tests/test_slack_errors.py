"""What a failed Slack call means (pure table), and the history search's paging."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.alerts.send import EVENT_TYPE, AlertPoster, alert_metadata, posted_event_ids
from bot.alerts.slack_errors import DEFAULT_RETRY_AFTER, Scope, SlackFailure, Verdict, classify


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
         SlackFailure(Verdict.RATE_LIMITED, "ratelimited", 2.0)),
        (api_error(429, {"ok": False}, {"retry-after": "30"}),
         SlackFailure(Verdict.RATE_LIMITED, "http_429", 30.0)),
        (api_error(429, "", {"Retry-After": "soon"}),
         SlackFailure(Verdict.RATE_LIMITED, "http_429", DEFAULT_RETRY_AFTER)),
        (api_error(429, "", {}),
         SlackFailure(Verdict.RATE_LIMITED, "http_429", DEFAULT_RETRY_AFTER)),
        (api_error(429, "", {"Retry-After": "99999"}),
         SlackFailure(Verdict.RATE_LIMITED, "http_429", 3600.0)),
        (api_error(503, "upstream connect error"), SlackFailure(Verdict.RETRY, "http_503")),
        (api_error(200, {"ok": False, "error": "internal_error"}),
         SlackFailure(Verdict.RETRY, "internal_error")),
        (api_error(200, {"ok": False, "error": "invalid_blocks"}),
         SlackFailure(Verdict.INVALID, "invalid_blocks")),
        (api_error(200, {"ok": False, "error": "msg_too_long"}),
         SlackFailure(Verdict.INVALID, "msg_too_long")),
        (api_error(200, {"ok": False, "error": "channel_not_found"}),
         SlackFailure(Verdict.PERMANENT, "channel_not_found", scope=Scope.CHANNEL)),
        (api_error(200, {"ok": False, "error": "is_archived"}),
         SlackFailure(Verdict.PERMANENT, "is_archived", scope=Scope.CHANNEL)),
        (api_error(200, {"ok": False, "error": "invalid_auth"}),
         SlackFailure(Verdict.PERMANENT, "invalid_auth", scope=Scope.WORKSPACE)),
        (api_error(200, {"ok": False, "error": "missing_scope"}),
         SlackFailure(Verdict.PERMANENT, "missing_scope", scope=Scope.WORKSPACE)),
        (api_error(200, {"ok": False, "error": "something_new"}),
         SlackFailure(Verdict.PERMANENT, "something_new")),
        (aiohttp.ClientConnectionError("refused"),
         SlackFailure(Verdict.RETRY, "ClientConnectionError")),
        (TimeoutError(), SlackFailure(Verdict.RETRY, "TimeoutError")),
        (ConnectionResetError(), SlackFailure(Verdict.RETRY, "ConnectionResetError")),
    ],
)  # fmt: skip
def test_classify(error: BaseException, expected: SlackFailure) -> None:
    assert classify(error) == expected


def test_other_exceptions_are_not_slack_failures() -> None:
    assert classify(ValueError("a bug")) is None


def test_posted_event_ids_reads_only_our_metadata() -> None:
    assert posted_event_ids({"metadata": alert_metadata(["a"])}) == (["a"], True)
    assert posted_event_ids({"metadata": alert_metadata(["a", "b"])}) == (["a", "b"], False)
    other = {"event_type": "someone_else", "event_payload": {"event_id": "a"}}
    assert posted_event_ids({"metadata": other}) == ([], False)
    assert posted_event_ids({"metadata": "junk"}) == ([], False)
    assert posted_event_ids({}) == ([], False)


async def test_history_search_follows_the_cursor_and_stops_when_all_are_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pages: dict[str | None, dict[str, Any]] = {
        None: {
            "messages": [
                {"ts": "3.0", "metadata": alert_metadata(["x"])},
                {"ts": "2.0", "text": "someone"},
            ],
            "response_metadata": {"next_cursor": "p2"},
        },
        "p2": {
            "messages": [{"ts": "1.0", "metadata": alert_metadata(["a", "b"])}],
            "response_metadata": {"next_cursor": "p3"},
        },
        "p3": {"messages": [{"ts": "0.5", "metadata": alert_metadata(["c"])}]},
    }
    asked: list[dict[str, Any]] = []

    async def history(**kwargs: Any) -> dict[str, Any]:
        asked.append(kwargs)
        return pages[kwargs["cursor"]]

    poster = AlertPoster(AsyncWebClient(token="xoxb-x"))
    monkeypatch.setattr(poster._slack, "conversations_history", history)
    since = datetime(2025, 3, 1, tzinfo=UTC)
    found = await poster.find_posted("C1", {"a", "x"}, since=since)
    assert found == {"x": ("3.0", True), "a": ("1.0", False)}
    assert [a["cursor"] for a in asked] == [None, "p2"]  # stopped: all found
    assert asked[0]["include_all_metadata"] is True
    assert asked[0]["oldest"] == f"{since.timestamp():.6f}"
    found = await poster.find_posted("C1", {"nope"}, since=since)
    assert found == {} and [a["cursor"] for a in asked[2:]] == [None, "p2", "p3"]


def test_the_poster_never_retries_behind_our_back() -> None:
    client = AsyncWebClient(token="xoxb-x")
    assert client.retry_handlers  # slack_sdk's default: a connection-error retry
    poster = AlertPoster(client)
    assert poster._slack.retry_handlers == []
    assert client.retry_handlers  # the shared client (Bolt's) is left as it was
    assert EVENT_TYPE == "timbal_job_alert"
