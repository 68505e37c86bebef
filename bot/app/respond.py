"""Replies to response URLs: one shared HTTP session, and each distinct reply serialized once.

Bolt's `respond` opens a session and a connection for every reply; slack_sdk's webhook client
(`AsyncWebhookClient.send_dict`, which this module used before) reuses a session, but still
builds a client, a retry state and a JSON string per reply. Under a crowd of `/jobs` that was
most of the time between Timbal's answer and the last reply, and the crowd's replies are
mostly one reply: requests that share a listing share its rendered blocks
(`JobListing.rendered`). So `Replies` posts bytes on one keep-alive session and keeps the
bodies of the last few distinct replies, keyed by their blocks object; the POST, its JSON and
its one retry on a dropped connection are what the webhook client did (hand-written, ~40
lines, for the per-reply cost). The proxy (HTTPS_PROXY, HTTP_PROXY) is read once, at start.

`SharedRespond` is a Bolt `AsyncRespond` (listeners keep their signature); the runtime puts
one in each request's context, and Bolt's own is then never built. It answers slack_sdk's
`WebhookResponse`, as Bolt's does; a connection that fails twice raises aiohttp's error.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any
from urllib.request import getproxies

import aiohttp
from slack_bolt.async_app import AsyncRespond
from slack_sdk.models import JsonObject
from slack_sdk.models.attachments import Attachment
from slack_sdk.models.blocks import Block
from slack_sdk.webhook import WebhookResponse

TIMEOUT_SECONDS = 30  # slack_sdk's webhook default
# At once: a crowd after a quiet spell opens no more (each a TLS handshake to Slack, and
# ~0.4 ms of the loop even on localhost); 200 replies share them, kept alive.
CONNECTIONS = 64
BODIES_KEPT = 32  # distinct replies kept serialized
RETRY_PAUSE_SECONDS = 0.5  # slack_sdk's first backoff
HEADERS = {"Content-Type": "application/json;charset=utf-8", "User-Agent": "timbal-jobs-bot"}
# What slack_sdk's webhook client retries once: the connection dropped or was refused.
RETRIED = (aiohttp.ServerConnectionError, aiohttp.ClientOSError)


def _plain(value: Any) -> Any:
    if isinstance(value, JsonObject):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class Replies:
    """The session replies share (the runtime opens it at start and closes it last)."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
            connector=aiohttp.TCPConnector(limit=CONNECTIONS),
            cookie_jar=aiohttp.DummyCookieJar(),  # a response URL sets none worth keeping
        )
        # The proxy slack_sdk's webhook client takes from HTTPS_PROXY / HTTP_PROXY, read
        # once: aiohttp's trust_env would look it (and ~/.netrc) up on a thread per request.
        proxies = getproxies()
        self._proxy = proxies.get("https") or proxies.get("http") or None
        self._bodies: OrderedDict[Hashable, tuple[object, bytes]] = OrderedDict()

    @property
    def closed(self) -> bool:
        return self.session.closed

    async def close(self) -> None:
        await self.session.close()

    def body(self, message: dict[str, Any]) -> bytes:
        """`message` as JSON, None values left out (as slack_sdk sends it); a message whose
        blocks are the same list as a recent one's (and the rest equal) is serialized once."""
        blocks = message.get("blocks")
        scalars = tuple(
            (k, v) for k, v in message.items() if k != "blocks" and isinstance(v, Hashable)
        )
        key: Hashable | None = None
        if isinstance(blocks, list) and len(scalars) == len(message) - 1:
            key = (id(blocks), scalars)
            kept = self._bodies.get(key)
            if kept is not None and kept[0] is blocks:
                self._bodies.move_to_end(key)
                return kept[1]
        plain = {k: _plain(v) for k, v in message.items() if v is not None}
        encoded = json.dumps(plain).encode()
        if key is not None:
            self._bodies[key] = (blocks, encoded)  # the list held: its id stays its own
            if len(self._bodies) > BODIES_KEPT:
                self._bodies.popitem(last=False)
        return encoded

    async def post(self, url: str, body: bytes) -> WebhookResponse:
        for attempt in (1, 2):
            try:
                return await self._post(url, body)
            except RETRIED as exc:
                if attempt == 2:
                    raise
                if not isinstance(exc, aiohttp.ServerDisconnectedError):
                    # Refused or reset, not a kept-alive connection the server had closed:
                    # wait a little first, as slack_sdk's retry handler does.
                    await asyncio.sleep(RETRY_PAUSE_SECONDS)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, url: str, body: bytes) -> WebhookResponse:
        # A reply while the bot stops (the session closed before or during it) fails with an
        # error the callers expect, not aiohttp's RuntimeError("Session is closed").
        if self.session.closed:
            raise aiohttp.ClientConnectionError("the reply session is closed")
        try:
            async with self.session.post(
                url, data=body, headers=HEADERS, proxy=self._proxy
            ) as response:
                text = await response.text()
                return WebhookResponse(
                    url=url,
                    status_code=response.status,
                    body=text,
                    headers=response.headers,  # type: ignore[arg-type]
                )
        except RuntimeError as exc:
            if self.session.closed:
                raise aiohttp.ClientConnectionError("the reply session is closed") from exc
            raise


class SharedRespond(AsyncRespond):
    def __init__(self, *, response_url: str | None, replies: Replies) -> None:
        super().__init__(response_url=response_url)
        self._replies = replies

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
        if isinstance(text, dict):
            message = text
        else:
            message = {  # what Bolt's respond sends
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
        return await self._replies.post(self.response_url, self._replies.body(message))
