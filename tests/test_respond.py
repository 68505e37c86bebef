"""bot.app.respond: replies to response URLs over one session; a distinct reply is serialized
once; a dropped connection is retried once, as slack_sdk's webhook client did."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.models.blocks import SectionBlock

from bot.app.respond import RETRY_PAUSE_SECONDS, Replies, SharedRespond
from bot.app.serve import serve


async def test_a_reply_is_posted_as_slack_sdk_posts_it() -> None:
    """JSON with its content type, the Nones left out, Block Kit models as their dicts."""
    seen: list[tuple[str, dict[str, object]]] = []

    async def response_url(request: web.Request) -> web.Response:
        seen.append((request.headers["Content-Type"], await request.json()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/response/{tag}", response_url)
    runner, port = await serve(app, "127.0.0.1", 0)
    replies = Replies()
    try:
        respond = SharedRespond(
            response_url=f"http://127.0.0.1:{port}/response/r1", replies=replies
        )
        response = await respond(
            text="t",
            blocks=[SectionBlock(block_id="b1", text="*hi*")],
            response_type="ephemeral",
            replace_original=False,
        )
    finally:
        await replies.close()
        await runner.cleanup()
    assert (response.status_code, response.body) == (200, "ok")
    assert seen == [
        (
            "application/json;charset=utf-8",
            {
                "text": "t",
                "blocks": [
                    {
                        "type": "section",
                        "block_id": "b1",
                        "text": {"type": "mrkdwn", "text": "*hi*"},
                    }
                ],
                "response_type": "ephemeral",
                "replace_original": False,
            },
        )
    ]


async def test_replies_that_share_their_blocks_are_serialized_once() -> None:
    replies = Replies()
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "10 jobs"}}]
    message = {"text": "10 jobs", "blocks": blocks, "response_type": "ephemeral"}
    first = replies.body(message)
    assert replies.body(dict(message)) is first  # the crowd's replies: one body
    other = replies.body({**message, "text": "other"})
    assert other is not first and json.loads(other)["text"] == "other"
    await replies.close()


@dataclass
class DroppingServer:
    """Answers 200 "ok", except that the first `drops` connections are closed unanswered."""

    drops: int
    connections: int = 0
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                if self.connections <= self.drops:
                    return  # closed, unanswered: the client sees the server disconnect
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[DroppingServer]:
    fake = DroppingServer(drops=request.param)
    listener = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}/response/r1"
    async with listener:
        yield fake


@pytest.mark.parametrize("server", [1], indirect=True)
async def test_a_dropped_connection_is_retried_once(server: DroppingServer) -> None:
    replies = Replies()
    respond = SharedRespond(response_url=server.url, replies=replies)
    response = await respond(text="hi", response_type="ephemeral")
    assert (response.status_code, response.body) == (200, "ok")
    assert server.connections == 2
    await replies.close()


@pytest.mark.parametrize("server", [2], indirect=True)
async def test_a_connection_dropped_twice_raises(server: DroppingServer) -> None:
    replies = Replies()
    respond = SharedRespond(response_url=server.url, replies=replies)
    with pytest.raises(aiohttp.ServerConnectionError):
        await respond(text="hi")
    assert server.connections == 2  # one retry, not more
    await replies.close()


async def test_a_reply_after_the_session_closed_is_a_connection_error() -> None:
    """What the callers catch (the error handler: aiohttp.ClientError), not RuntimeError."""
    replies = Replies()
    await replies.close()
    with pytest.raises(aiohttp.ClientConnectionError, match="closed"):
        await SharedRespond(response_url="http://127.0.0.1:9/r", replies=replies)(text="hi")


async def test_refused_waits_before_its_retry_and_a_close_meanwhile_is_an_error() -> None:
    """Refused (nothing listens), unlike a kept-alive connection the server closed, waits
    before its retry, as slack_sdk does; the bot stopping during that pause (the session
    closed) ends the reply with a connection error, not aiohttp's RuntimeError."""
    replies = Replies()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    respond = SharedRespond(response_url=f"http://127.0.0.1:{port}/r", replies=replies)
    started = time.monotonic()
    with pytest.raises(aiohttp.ClientConnectorError):
        await respond(text="hi")
    assert time.monotonic() - started >= RETRY_PAUSE_SECONDS  # it waited, then tried again
    reply = asyncio.create_task(respond(text="hi"))
    await asyncio.sleep(RETRY_PAUSE_SECONDS / 2)  # refused once, now in the pause
    await replies.close()
    with pytest.raises(aiohttp.ClientConnectionError, match="closed"):
        await reply


async def test_without_a_response_url_respond_refuses() -> None:
    replies = Replies()
    with pytest.raises(ValueError, match="no response_url"):
        await SharedRespond(response_url=None, replies=replies)(text="hi")
    await replies.close()
