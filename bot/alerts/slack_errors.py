"""Classify an exception from a Slack Web API call as a `SlackFailure` (`bot.alerts.failure`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.alerts.failure import (
    CHANNEL_ERRORS,
    DEFAULT_RETRY_AFTER,
    INVALID_ERRORS,
    MAX_RETRY_AFTER,
    RATE_LIMIT_ERRORS,
    TOKEN_ERRORS,
    TRANSIENT_ERRORS,
    FailureKind,
    Scope,
    SlackFailure,
)
from bot.backoff import retry_after as parse_retry_after

# Raised before any byte reached Slack: it cannot have acted.
NOT_SENT_ERRORS = (aiohttp.ClientConnectorError,)


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    for key in (name, name.lower()):
        value = headers.get(key) if hasattr(headers, "get") else None
        if value is not None:
            return str(value[0] if isinstance(value, list) and value else value)
    return None


def retry_after(headers: Any) -> float:
    """The `Retry-After` of a Slack answer, in seconds (1 s when absent or unreadable)."""
    seconds = parse_retry_after(
        _header(headers, "Retry-After"), datetime.now(UTC), cap=MAX_RETRY_AFTER
    )
    return seconds or DEFAULT_RETRY_AFTER


def _status_and_data(exc: SlackApiError) -> tuple[int, Any]:
    response = exc.response
    # A body slack_sdk could not parse comes with aiohttp's response (`status`, no data).
    status = int(getattr(response, "status_code", 0) or getattr(response, "status", 0) or 0)
    return status, getattr(response, "data", None)


def error_code(exc: SlackApiError) -> str:
    """Slack's error code (`invalid_auth`, …), or `http_<status>` when the answer was not
    Slack's JSON (a 503 page from a proxy, say)."""
    status, data = _status_and_data(exc)
    error = data.get("error") if isinstance(data, dict) else None
    return str(error) if error else f"http_{status}"


def classify(exc: BaseException) -> SlackFailure | None:
    """The failure an exception from a Slack call stands for; None when it is not one (a bug)."""
    if isinstance(exc, SlackApiError):
        status, data = _status_and_data(exc)
        error = data.get("error") if isinstance(data, dict) else None
        reason = str(error) if error else f"http_{status}"
        if status == 429 or reason in RATE_LIMIT_ERRORS:
            headers = getattr(exc.response, "headers", None)
            return SlackFailure(FailureKind.RATE_LIMITED, reason, retry_after(headers))
        if status >= 500 or reason in TRANSIENT_ERRORS:
            return SlackFailure(FailureKind.RETRY, reason, maybe_sent=True)
        if not error and not 400 <= status < 500:  # not Slack's verdict (a garbled body)
            return SlackFailure(FailureKind.RETRY, reason, maybe_sent=True)
        if reason in INVALID_ERRORS:
            return SlackFailure(FailureKind.INVALID, reason)
        if reason in TOKEN_ERRORS:
            needed = str(data.get("needed") or "") if isinstance(data, dict) else ""
            return SlackFailure(FailureKind.PERMANENT, reason, scope=Scope.WORKSPACE, needed=needed)
        # A refused reply (`THREAD_ERRORS`) condemns its thread only: MESSAGE.
        scope = Scope.CHANNEL if reason in CHANNEL_ERRORS else Scope.MESSAGE
        return SlackFailure(FailureKind.PERMANENT, reason, scope=scope)
    if isinstance(exc, NOT_SENT_ERRORS):
        return SlackFailure(FailureKind.RETRY, type(exc).__name__, maybe_sent=False)
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return SlackFailure(FailureKind.RETRY, type(exc).__name__, maybe_sent=True)
    return None
