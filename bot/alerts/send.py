"""The notifier's Slack calls: post an alert (with one plain-text retry), post a thread reply,
find our earlier posts of given events in a channel's history.

Failures come back as `SlackFailure` values (see `bot.alerts.slack_errors`), never as exceptions,
except for errors that are not Slack's (bugs), which propagate.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts.render import AlertMessage, render_plain
from bot.alerts.slack_errors import SlackFailure, Verdict, classify

log = logging.getLogger(__name__)

EVENT_TYPE = "timbal_job_alert"
HISTORY_PAGES = 10  # 2,000 messages back at most when looking for a post of ours
HISTORY_PAGE_SIZE = 200


def alert_metadata(event_ids: Sequence[str]) -> dict[str, Any]:
    """The Slack message metadata that lets a later attempt find this post."""
    payload: dict[str, Any] = (
        {"event_id": event_ids[0]} if len(event_ids) == 1 else {"event_ids": list(event_ids)}
    )
    return {"event_type": EVENT_TYPE, "event_payload": payload}


def posted_event_ids(message: dict[str, Any]) -> tuple[list[str], bool]:
    """(event ids a message of ours carries, whether it was one alert rather than a digest)."""
    meta = message.get("metadata") or {}
    if not isinstance(meta, dict) or meta.get("event_type") != EVENT_TYPE:
        return [], False
    payload = meta.get("event_payload") or {}
    if "event_id" in payload:
        return [str(payload["event_id"])], True
    return [str(e) for e in payload.get("event_ids") or []], False


@dataclass(frozen=True, slots=True)
class PostResult:
    ts: str | None  # the message's ts when Slack accepted it
    failure: SlackFailure | None = None
    plain_text: bool = False  # the blocks were refused and the plain-text retry was made


class AlertPoster:
    """chat.postMessage / conversations.history for alerts, with no hidden retries."""

    def __init__(self, slack: AsyncWebClient) -> None:
        # Our own copy of the client, without slack_sdk's retry handlers: its connection-error
        # handler would re-send a chat.postMessage Slack may already have processed (a
        # duplicate no in-flight record sees), and a rate-limit handler would sleep inside the
        # call, holding one channel's pause in this process only. The notifier decides.
        self._slack = copy.copy(slack)
        self._slack.retry_handlers = []

    async def post(self, ch: str, message: AlertMessage, metadata: dict[str, Any]) -> PostResult:
        """Post with blocks; once more as plain text if Slack refuses the blocks or length."""
        blocks = message.blocks or None  # Slack refuses an empty `blocks` array
        failure = await self._post(ch, metadata, text=message.text, blocks=blocks)
        if isinstance(failure, str):
            return PostResult(ts=failure)
        if failure.verdict is not Verdict.INVALID:
            return PostResult(ts=None, failure=failure)
        log.warning(
            "Slack refused the alert for %s (%s): retrying as plain text", ch, failure.reason
        )
        again = await self._post(ch, metadata, text=render_plain(message))
        if isinstance(again, str):
            return PostResult(ts=again, plain_text=True)
        if again.verdict is Verdict.INVALID:  # refused twice: give up on this message
            again = SlackFailure(Verdict.PERMANENT, again.reason)
        return PostResult(ts=None, failure=again, plain_text=True)

    async def reply(self, ch: str, thread_ts: str, text: str) -> SlackFailure | None:
        result = await self._post(ch, None, text=text, thread_ts=thread_ts)
        return None if isinstance(result, str) else result

    async def _post(
        self, ch: str, metadata: dict[str, Any] | None, **fields: Any
    ) -> str | SlackFailure:
        try:
            response = await self._slack.chat_postMessage(
                channel=ch, metadata=metadata, unfurl_links=False, unfurl_media=False, **fields
            )
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            return failure
        return str(response["ts"])

    async def find_posted(
        self, ch: str, event_ids: set[str], *, since: datetime
    ) -> dict[str, tuple[str, bool]]:
        """event id -> (ts, posted alone) for our messages in `ch` since `since`.

        Raises what the Slack call raised (the caller classifies it)."""
        found: dict[str, tuple[str, bool]] = {}
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            response = await self._slack.conversations_history(
                channel=ch,
                oldest=f"{max(since.timestamp(), 0):.6f}",
                include_all_metadata=True,
                limit=HISTORY_PAGE_SIZE,
                cursor=cursor,
            )
            for message in response.get("messages") or []:
                ids, alone = posted_event_ids(message)
                for event_id in ids:
                    if event_id in event_ids:
                        found.setdefault(event_id, (str(message["ts"]), alone))
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if event_ids <= found.keys() or not cursor:
                break
        return found
