"""Replies to response URLs over one shared HTTP session (keep-alive), instead of Bolt's
`respond`, which opens a session and a connection for every reply: under a crowd of `/jobs`
that was most of the time between Timbal's answer and the last reply.

`SharedRespond` is a Bolt `AsyncRespond` (listeners keep their signature); the runtime puts
one in each request's context, and Bolt's own is then never built. The message goes through
slack_sdk's public `AsyncWebhookClient.send`, as Bolt's does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncRespond
from slack_sdk.models.attachments import Attachment
from slack_sdk.models.blocks import Block
from slack_sdk.webhook import WebhookResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

TIMEOUT_SECONDS = 30  # slack_sdk's webhook default


def reply_session() -> aiohttp.ClientSession:
    """The session replies share (the runtime opens it at start and closes it last)."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS))


class SharedRespond(AsyncRespond):
    def __init__(self, *, response_url: str | None, session: aiohttp.ClientSession) -> None:
        super().__init__(response_url=response_url)
        self._session = session

    async def __call__(
        self,
        text: str | dict[str, Any] = "",
        blocks: Sequence[dict[str, Any] | Block] | None = None,
        attachments: Sequence[dict[str, Any] | Attachment] | None = None,
        response_type: str | None = None,
        replace_original: bool | None = None,
        delete_original: bool | None = None,
        unfurl_links: bool | None = None,
        unfurl_media: bool | None = None,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WebhookResponse:
        if self.response_url is None:
            raise ValueError("respond is unsupported here as there is no response_url")
        client = AsyncWebhookClient(url=self.response_url, session=self._session)
        if isinstance(text, dict):
            return await client.send_dict(text)
        message: dict[str, Any] = {  # what Bolt's respond sends (send_dict drops the Nones)
            "text": text,
            "blocks": blocks or None,
            "attachments": attachments or None,
            "response_type": response_type,
            "replace_original": replace_original,
            "delete_original": delete_original,
            "unfurl_links": unfurl_links,
            "unfurl_media": unfurl_media,
            "thread_ts": thread_ts,
            "metadata": metadata,
        }
        return await client.send_dict(message)
