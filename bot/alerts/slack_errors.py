"""What a failed Slack call means for a delivery: a pure decision with a named reason.

- `RATE_LIMITED`: HTTP 429, `ratelimited`, or chat.postMessage's own `rate_limited` ("posted
  too many messages", which may come with HTTP 200): pause that channel for `Retry-After`.
- `RETRY`: 5xx, Slack's transient errors, an answer without Slack's error code that is not a
  4xx (a body slack_sdk could not parse), timeouts, connection errors: back off and retry;
  the post may or may not have happened, so the in-flight record stays.
- `INVALID`: `invalid_blocks` / `msg_too_long`: the content was refused; retry once as text.
- `PERMANENT`: anything else Slack answered (`channel_not_found`, `invalid_auth`, ...):
  dead-letter. `scope` says whether it condemns the message, the channel, or the token
  (the whole workspace).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError


class Verdict(StrEnum):
    RATE_LIMITED = "rate_limited"
    RETRY = "retry"
    INVALID = "invalid"
    PERMANENT = "permanent"


class Scope(StrEnum):
    MESSAGE = "message"  # this message only
    CHANNEL = "channel"  # every message for this channel would fail the same way
    WORKSPACE = "workspace"  # every message anywhere would fail the same way (the token)


TRANSIENT_ERRORS = frozenset(
    {
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "timeout",
        "team_added_to_org",  # an Enterprise migration: "intermittently unavailable"
    }
)
RATE_LIMIT_ERRORS = frozenset({"ratelimited", "rate_limited"})
INVALID_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_too_long"})
CHANNEL_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
        "cannot_reply_to_message",
        "team_access_not_granted",
        "ekm_access_denied",
    }
)
TOKEN_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "no_permission",
        "not_allowed_token_type",
        "org_login_required",
    }
)
DEFAULT_RETRY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class SlackFailure:
    verdict: Verdict
    reason: str  # Slack's error code, `http_<status>`, or the exception's type
    retry_after: float | None = None
    scope: Scope = Scope.MESSAGE


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    for key in (name, name.lower()):
        value = headers.get(key) if hasattr(headers, "get") else None
        if value is not None:
            return str(value[0] if isinstance(value, list) and value else value)
    return None


def retry_after(headers: Any) -> float:
    raw = _header(headers, "Retry-After")
    try:
        seconds = float(raw) if raw is not None else DEFAULT_RETRY_AFTER
    except ValueError:
        seconds = DEFAULT_RETRY_AFTER
    return min(max(seconds, 0.0), 3600.0) or DEFAULT_RETRY_AFTER


def _status_and_error(exc: SlackApiError) -> tuple[int, str | None]:
    response = exc.response
    # A body slack_sdk could not parse comes with aiohttp's response (`status`, no data).
    status = int(getattr(response, "status_code", 0) or getattr(response, "status", 0) or 0)
    data = getattr(response, "data", None)
    error = data.get("error") if isinstance(data, dict) else None
    return status, str(error) if error else None


def error_code(exc: SlackApiError) -> str:
    """Slack's error code (`invalid_auth`, …), or `http_<status>` when the answer was not
    Slack's JSON (a 503 page from a proxy, say)."""
    status, error = _status_and_error(exc)
    return error or f"http_{status}"


def classify(exc: BaseException) -> SlackFailure | None:
    """The verdict for an exception from a Slack call; None when it is not a Slack failure."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status, error = _status_and_error(exc)
        reason = error or f"http_{status}"
        if status == 429 or reason in RATE_LIMIT_ERRORS:
            return SlackFailure(
                Verdict.RATE_LIMITED, reason, retry_after(getattr(response, "headers", None))
            )
        if status >= 500 or reason in TRANSIENT_ERRORS:
            return SlackFailure(Verdict.RETRY, reason)
        if not error and not 400 <= status < 500:  # not Slack's verdict (a garbled body)
            return SlackFailure(Verdict.RETRY, reason)
        if reason in INVALID_ERRORS:
            return SlackFailure(Verdict.INVALID, reason)
        scope = (
            Scope.WORKSPACE
            if reason in TOKEN_ERRORS
            else Scope.CHANNEL
            if reason in CHANNEL_ERRORS
            else Scope.MESSAGE
        )
        return SlackFailure(Verdict.PERMANENT, reason, scope=scope)
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return SlackFailure(Verdict.RETRY, type(exc).__name__)
    return None
