"""The notifier's Slack calls: post, reply in a thread, update in place, and search a channel
(or a thread) for our own earlier messages by their metadata.

Every message carries Slack metadata naming the actions it performs, so after a crash the
channel's history tells whether an action already happened. Failures come back as
`SlackFailure` values (`bot.alerts.failure`), never as exceptions; an exception that is not
Slack's (a bug) propagates.

No hidden retries: the sender works on its own copy of the client without slack_sdk's retry
handlers. Its connection-error handler would re-send a chat.postMessage Slack may already
have processed, and its rate-limit handler would sleep inside the call; the notifier decides
both (`bot.alerts.decide`). `limit` bounds the calls in flight at once; it is held for the
call only, never while an attempt waits (a history search waiting out a 429 holds nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.alerts.failure import SlackFailure
from bot.alerts.render import AlertMessage, render_plain
from bot.alerts.slack_errors import classify
from bot.domain.delivery import Message

EVENT_TYPE = "timbal_job_alert"
HISTORY_PAGE_SIZE = 200  # Slack gives non-Marketplace apps 15 a page whatever is asked


def metadata(action_ids: Iterable[str], event_ids: Iterable[str]) -> dict[str, Any]:
    """The Slack message metadata that lets a later attempt find this message."""
    return {
        "event_type": EVENT_TYPE,
        "event_payload": {"actions": list(action_ids), "events": list(dict.fromkeys(event_ids))},
    }


def posted_actions(message: dict[str, Any]) -> list[str]:
    """The action ids a message of ours carries in its metadata ([] for anyone else's)."""
    meta = message.get("metadata") or {}
    if not isinstance(meta, dict) or meta.get("event_type") != EVENT_TYPE:
        return []
    payload = meta.get("event_payload") or {}
    actions = payload.get("actions") if isinstance(payload, dict) else None
    return [str(a) for a in actions] if isinstance(actions, list) else []


def plain(message: Message) -> str:
    """The message as one mrkdwn text, for the retry after `invalid_blocks`."""
    return render_plain(AlertMessage(text=message.text, blocks=list(message.blocks)))


@dataclass(frozen=True, slots=True)
class SearchPage:
    found: dict[str, str]  # action id -> ts of the message that carries it
    cursor: str | None  # the next page, or None when this was the last


class SlackSender:
    def __init__(
        self, slack: AsyncWebClient, *, timeout: float, limit: asyncio.Semaphore | None = None
    ) -> None:
        self._slack = copy.copy(slack)
        self._slack.retry_handlers = []
        self._slack.timeout = max(int(timeout), 1)
        self._limit = limit or asyncio.Semaphore(20)
        self.in_flight = 0  # calls being made right now (a stand-down lets them finish)
        self.granted: frozenset[str] | None = None  # the token's scopes, from auth.test

    async def post(
        self,
        channel: str,
        message: Message,
        meta: dict[str, Any],
        *,
        thread_ts: str | None = None,
        plain_text: bool = False,
    ) -> str | SlackFailure:
        """chat.postMessage; the new message's ts, or the failure."""
        fields: dict[str, Any] = {"text": plain(message) if plain_text else message.text}
        if message.blocks and not plain_text:  # Slack refuses an empty `blocks` array
            fields["blocks"] = message.blocks
        if thread_ts is not None:
            fields["thread_ts"] = thread_ts
        return await self._call(
            "chat_postMessage",
            channel=channel,
            metadata=meta,
            unfurl_links=False,
            unfurl_media=False,
            **fields,
        )

    async def update(
        self, channel: str, ts: str, message: Message, meta: dict[str, Any], *, plain_text: bool
    ) -> str | SlackFailure:
        """chat.update of `ts`; setting the same content twice is harmless, so `decide()` makes
        an update in doubt again instead of searching for it. The message keeps the metadata
        it was posted with (it names the post, which a later search may look for); `meta` is
        for the new message when the update falls back to a post."""
        del meta
        text = plain(message) if plain_text else message.text
        blocks = [] if plain_text else message.blocks  # [] clears blocks the card had
        return await self._call("chat_update", channel=channel, ts=ts, text=text, blocks=blocks)

    async def search(
        self,
        channel: str,
        wanted: set[str],
        *,
        oldest_ms: int,
        latest_ms: int | None = None,
        thread_ts: str | None = None,
        cursor: str | None = None,
    ) -> SearchPage | SlackFailure:
        """One page of the channel's history (or of a thread) between `oldest_ms` and
        `latest_ms` (inclusive)."""
        args: dict[str, Any] = {
            "channel": channel,
            "oldest": f"{max(oldest_ms, 0) / 1000:.6f}",
            "inclusive": True,
            "include_all_metadata": True,
            "limit": HISTORY_PAGE_SIZE,
        }
        if latest_ms is not None:
            args["latest"] = f"{max(latest_ms, 0) / 1000:.6f}"
        if cursor:
            args["cursor"] = cursor
        method = "conversations_history"
        if thread_ts is not None:
            method, args["ts"] = "conversations_replies", thread_ts
        response = await self._request(method, **args)
        if isinstance(response, SlackFailure):
            return response
        found: dict[str, str] = {}
        for message in response.get("messages") or []:
            for action in posted_actions(message):
                if action in wanted:
                    found.setdefault(action, str(message["ts"]))
        next_cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
        return SearchPage(found=found, cursor=next_cursor)

    async def auth_test(self) -> SlackFailure | None:
        """None when the token works; `granted` then holds its scopes (None when Slack did not
        say: the `x-oauth-scopes` header is missing)."""
        try:
            response = await self._slack.auth_test()
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            return failure
        headers = {str(k).lower(): v for k, v in (response.headers or {}).items()}
        raw = headers.get("x-oauth-scopes")
        if isinstance(raw, list):
            raw = ",".join(str(v) for v in raw)
        self.granted = (
            None if raw is None else frozenset(p.strip() for p in str(raw).split(",") if p.strip())
        )
        return None

    @contextlib.asynccontextmanager
    async def _limited(self) -> AsyncIterator[None]:
        async with self._limit:
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1

    async def _request(self, method: str, **args: Any) -> AsyncSlackResponse | SlackFailure:
        """One Web API call under the sender's limit; Slack's refusals come back as values
        (anything else is a bug, and raises)."""
        try:
            async with self._limited():
                response: AsyncSlackResponse = await getattr(self._slack, method)(**args)
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            return failure
        return response

    async def _call(self, method: str, **args: Any) -> str | SlackFailure:
        response = await self._request(method, **args)
        return response if isinstance(response, SlackFailure) else str(response["ts"])
