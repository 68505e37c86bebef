"""`conversations.history` and `conversations.replies` for the fake Slack, with Slack's limits.

Both page with an opaque cursor, filter by `oldest` / `latest` (exclusive unless `inclusive`),
and return message metadata only with `include_all_metadata`, as Slack documents. History is
the channel's top-level messages, newest first; replies are a thread's parent then its replies,
oldest first.

`HistoryTier` sets how many messages a page may hold and how many calls a minute each method
takes. `TIER_3` is what internal and Marketplace apps get; `LIMITED` is what, since 2025,
apps distributed outside the Slack Marketplace get: 15 messages a page and one request a
minute, answered with 429 and a `Retry-After` beyond that.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_LIMIT = 100
WINDOW = 60.0


def flag(value: Any) -> bool:
    """A boolean argument as Slack reads it (slack_sdk sends True as "1")."""
    return value is True or str(value).lower() in ("1", "true")


@dataclass(frozen=True, slots=True)
class HistoryTier:
    max_page: int = 999
    per_minute: int | None = None  # None: not limited by the fake


TIER_3 = HistoryTier()
LIMITED = HistoryTier(max_page=15, per_minute=1)


@dataclass
class RateLimiter:
    """Calls per method in a sliding minute; `retry_after()` is 0 when a call may go."""

    tier: HistoryTier = TIER_3
    _calls: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, method: str, now: float) -> int:
        if self.tier.per_minute is None:
            return 0
        calls = self._calls.setdefault(method, deque())
        while calls and now - calls[0] >= WINDOW:
            calls.popleft()
        if len(calls) >= self.tier.per_minute:
            return max(math.ceil(WINDOW - (now - calls[0])), 1)
        calls.append(now)
        return 0


def _in_range(ts: float, body: dict[str, Any]) -> bool:
    oldest = float(body.get("oldest") or 0)
    latest = float(body["latest"]) if body.get("latest") else math.inf
    if flag(body.get("inclusive")):
        return oldest <= ts <= latest
    return oldest < ts < latest


def _view(message: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
    view = {"type": "message", "ts": message["ts"], "text": message["text"]}
    if message.get("thread_ts"):
        view["thread_ts"] = message["thread_ts"]
    if with_metadata and message.get("metadata"):
        view["metadata"] = message["metadata"]
    return view


def page(
    messages: Iterable[dict[str, Any]], body: dict[str, Any], tier: HistoryTier
) -> dict[str, Any]:
    """One page of `messages` (already in the order Slack returns them)."""
    with_metadata = flag(body.get("include_all_metadata"))
    found = [m for m in messages if _in_range(float(m["ts"]), body)]
    start = int(body.get("cursor") or 0)
    size = min(int(body.get("limit") or DEFAULT_LIMIT), tier.max_page)
    chunk = found[start : start + size]
    more = start + size < len(found)
    answer: dict[str, Any] = {
        "ok": True,
        "messages": [_view(m, with_metadata) for m in chunk],
        "has_more": more,
    }
    if more:
        answer["response_metadata"] = {"next_cursor": str(start + size)}
    return answer


def history(messages: list[dict[str, Any]], channel: str | None) -> list[dict[str, Any]]:
    """A channel's top-level messages, newest first (a thread's parent counts)."""
    return [
        m
        for m in reversed(messages)
        if m["channel"] == channel and (not m["thread_ts"] or m["thread_ts"] == m["ts"])
    ]


def thread(messages: list[dict[str, Any]], channel: str | None, ts: str) -> list[dict[str, Any]]:
    """A thread: its parent, then its replies, oldest first."""
    parent = [m for m in messages if m["channel"] == channel and m["ts"] == ts]
    replies = [m for m in messages if m["channel"] == channel and m["thread_ts"] == ts]
    return parent + [m for m in replies if m["ts"] != ts]
