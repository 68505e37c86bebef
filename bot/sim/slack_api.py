"""A fake Slack Web API over real HTTP, with Slack's documented limits.

It answers `auth.test`, `chat.postMessage`, `chat.update`, `chat.postEphemeral`,
`conversations.history` and response URLs (`/response/{id}`), records every call, checks
the bot token, rejects blocks over Block Kit's limits with `invalid_blocks` and text over
40,000 characters with `msg_too_long`, and can be told to fail (429 with `Retry-After`, 5xx,
`ok: false` with an error), for all calls or for one channel. With a Socket Mode fake
attached (`start_socket_mode()`) it also answers `apps.connections.open`, which checks the
app-level token instead of the bot token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.app.serve import serve
from bot.sim.socket_mode import DEFAULT_APP_TOKEN, FakeSocketMode

# Slack's documented limits, written here again on purpose: the fake is the oracle the
# renderers are tested against, so it must not share their constants (a wrong one would pass).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_MESSAGE_TEXT = 40000


@dataclass
class Call:
    """One request the fake received."""

    method: str  # "chat.postMessage", or "response_url" for a response URL
    body: dict[str, Any]
    at: float  # time.monotonic()
    path: str = ""

    @property
    def channel(self) -> str | None:
        value = self.body.get("channel")
        return str(value) if value is not None else None


@dataclass
class Failure:
    """A scripted answer, used `times` times for calls matching `method` (and `channel`)."""

    method: str | None  # None: any method
    status: int = 200
    error: str | None = None  # with status 200: {"ok": false, "error": error}
    retry_after: int | None = None
    channel: str | None = None
    times: int = 1


def _flag(value: Any) -> bool:
    """A boolean argument as Slack reads it (slack_sdk sends True as "1")."""
    return value is True or str(value).lower() in ("1", "true")


def block_errors(blocks: Any) -> list[str]:
    """What Slack would reject in these blocks (empty when they are valid enough)."""
    if not isinstance(blocks, list):
        return ["blocks must be a list"]
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"more than {MAX_BLOCKS} blocks ({len(blocks)})")
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or "type" not in block:
            errors.append(f"block {i} has no type")
            continue
        kind = block["type"]
        text = block.get("text")
        if kind == "header":
            if not isinstance(text, dict) or text.get("type") != "plain_text":
                errors.append(f"header {i} text must be plain_text")
            elif not 0 < len(text.get("text", "")) <= MAX_HEADER_TEXT:
                errors.append(f"header {i} text length {len(text.get('text', ''))}")
        elif kind == "section":
            fields = block.get("fields") or []
            if text is None and not fields:
                errors.append(f"section {i} has neither text nor fields")
            if isinstance(text, dict) and not 0 < len(text.get("text", "")) <= MAX_SECTION_TEXT:
                errors.append(f"section {i} text length {len(text.get('text', ''))}")
            if len(fields) > MAX_FIELDS:
                errors.append(f"section {i} has {len(fields)} fields")
            for f in fields:
                if not 0 < len(f.get("text", "")) <= MAX_FIELD_TEXT:
                    errors.append(f"section {i} field length {len(f.get('text', ''))}")
        elif kind == "context":
            elements = block.get("elements") or []
            if not 0 < len(elements) <= MAX_CONTEXT_ELEMENTS:
                errors.append(f"context {i} has {len(elements)} elements")
            for el in elements:
                if (
                    el.get("type") in ("mrkdwn", "plain_text")
                    and not 0 < len(el.get("text", "")) <= MAX_SECTION_TEXT
                ):
                    errors.append(f"context {i} element length")
        elif kind == "rich_text" or kind in ("divider", "actions", "image"):
            pass
        else:
            errors.append(f"unknown block type {kind!r}")
    return errors


@dataclass
class FakeSlack:
    """The fake's state. Start it with `start()`; `base_url` then ends in `/api/`."""

    bot_token: str = "xoxb-test-token"  # noqa: S105 - a fake's fixed credential
    bot_user_id: str = "U0BOT"
    team: str = "Timbal Test"
    team_id: str = "T0TEST"
    known_channels: set[str] | None = None  # None: every channel exists
    min_channel_interval: float | None = None  # answer 429 when posted faster than this
    on_post: Callable[[Call], None] | None = None  # e.g. the demo's pretty printer
    calls: list[Call] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    down: bool = False  # every call answers 503 while set
    socket_mode: FakeSocketMode | None = None  # set by start_socket_mode()
    _runner: web.AppRunner | None = None
    _port: int = 0
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _last_post: dict[str, float] = field(default_factory=dict)
    _changed: asyncio.Condition | None = None

    # --- lifecycle -------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{rid}", self._response_url)
        self._runner, self._port = await serve(app, host, port)
        self._changed = asyncio.Condition()
        return self

    async def start_socket_mode(self, app_token: str = DEFAULT_APP_TOKEN) -> FakeSocketMode:
        """Start a Socket Mode endpoint; `apps.connections.open` with `app_token` points to it."""
        self.socket_mode = await FakeSocketMode(app_token=app_token).start()
        return self.socket_mode

    async def stop(self) -> None:
        if self.socket_mode is not None:
            await self.socket_mode.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/api/"

    def response_url(self, rid: str = "r1") -> str:
        return f"http://127.0.0.1:{self._port}/response/{rid}"

    # --- scripting -------------------------------------------------------------------
    def fail(self, method: str | None, **kwargs: Any) -> None:
        self.failures.append(Failure(method=method, **kwargs))

    def calls_to(self, method: str, channel: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == method and (channel is None or c.channel == channel)
        ]

    def posted(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Messages Slack accepted (ok: true), in order."""
        return [m for m in self.messages if channel is None or m["channel"] == channel]

    async def wait_for(self, predicate: Callable[[FakeSlack], bool], within: float = 10.0) -> None:
        """Wait until `predicate(self)` holds; raise TimeoutError with what was seen."""
        assert self._changed is not None, "start() first"
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), within)
            except TimeoutError:
                methods = [c.method for c in self.calls]
                raise TimeoutError(f"condition not met; calls so far: {methods}") from None

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    # --- handlers --------------------------------------------------------------------
    async def _body(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                data = await request.json()
                if isinstance(data, dict):
                    body.update(data)
            else:
                body.update(dict(await request.post()))
        for key in ("blocks", "metadata", "attachments"):
            if isinstance(body.get(key), str):
                with contextlib.suppress(ValueError):
                    body[key] = json.loads(body[key])
        return body

    def _scripted(self, method: str, channel: str | None) -> Failure | None:
        for f in self.failures:
            if f.method in (None, method) and (f.channel is None or f.channel == channel):
                f.times -= 1
                if f.times <= 0:
                    self.failures.remove(f)
                return f
        return None

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await self._body(request)
        call = Call(method=method, body=body, at=time.monotonic(), path=request.path)
        self.calls.append(call)
        try:
            return self._answer(request, method, body, call)
        finally:
            await self._notify()

    def _answer(
        self, request: web.Request, method: str, body: dict[str, Any], call: Call
    ) -> web.Response:
        if self.down:
            return web.Response(status=503, text="upstream connect error")
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else body.get("token")
        socket = self.socket_mode if method == "apps.connections.open" else None
        if socket is not None:  # the one method that takes the app-level token
            refused = socket.refusal(token)
            if refused is not None:
                return web.json_response({"ok": False, "error": refused})
        elif token != self.bot_token:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        scripted = self._scripted(method, call.channel)
        if scripted is not None:
            headers = {}
            if scripted.retry_after is not None:
                headers["Retry-After"] = str(scripted.retry_after)
            if scripted.status != 200:
                payload = {"ok": False, "error": scripted.error or "ratelimited"}
                return web.json_response(payload, status=scripted.status, headers=headers)
            return web.json_response({"ok": False, "error": scripted.error}, headers=headers)
        if socket is not None:
            return web.json_response({"ok": True, "url": socket.new_url()})
        if method == "auth.test":
            return web.json_response(
                {
                    "ok": True,
                    "url": "https://timbal-test.slack.com/",
                    "team": self.team,
                    "user": "timbal-jobs",
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "bot_id": "B0BOT",
                }
            )
        if method in ("chat.postMessage", "chat.postEphemeral", "chat.update"):
            return self._post(method, body, call)
        if method == "conversations.history":
            return self._history(body)
        return web.json_response({"ok": False, "error": "unknown_method"})

    def _post(self, method: str, body: dict[str, Any], call: Call) -> web.Response:
        channel = call.channel
        if not channel:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        if self.known_channels is not None and channel not in self.known_channels:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        if self.min_channel_interval is not None and method == "chat.postMessage":
            last = self._last_post.get(channel)
            if last is not None and call.at - last < self.min_channel_interval:
                return web.json_response(
                    {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
                )
        text = body.get("text") or ""
        blocks = body.get("blocks")
        if not text and not blocks:
            return web.json_response({"ok": False, "error": "no_text"})
        if len(str(text)) > MAX_MESSAGE_TEXT:
            return web.json_response({"ok": False, "error": "msg_too_long"})
        if blocks is not None:
            errors = block_errors(blocks)
            if errors:
                return web.json_response({"ok": False, "error": "invalid_blocks", "errors": errors})
        self._last_post[channel] = call.at
        ts = (
            body.get("ts")
            if method == "chat.update"
            else f"{int(time.time())}.{next(self._ts):06d}"
        )
        message = {
            "method": method,
            "channel": channel,
            "ts": ts,
            "thread_ts": body.get("thread_ts"),
            "text": text,
            "blocks": blocks,
            "metadata": body.get("metadata"),
        }
        self.messages.append(message)
        if self.on_post is not None:
            self.on_post(call)
        return web.json_response({"ok": True, "channel": channel, "ts": ts, "message": message})

    def _history(self, body: dict[str, Any]) -> web.Response:
        channel = body.get("channel")
        oldest = float(body.get("oldest") or 0)
        limit = int(body.get("limit") or 100)
        # As Slack documents them: metadata only with include_all_metadata, and `oldest`
        # itself excluded unless inclusive (both default to false).
        with_metadata = _flag(body.get("include_all_metadata"))
        inclusive = _flag(body.get("inclusive"))
        found = [
            {"type": "message", "ts": m["ts"], "text": m["text"]}
            | ({"metadata": m["metadata"]} if with_metadata and m["metadata"] else {})
            for m in reversed(self.messages)
            if m["channel"] == channel
            and m["method"] == "chat.postMessage"
            and not m["thread_ts"]
            and (float(m["ts"]) >= oldest if inclusive else float(m["ts"]) > oldest)
        ][:limit]
        return web.json_response({"ok": True, "messages": found, "has_more": False})

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        call = Call(method="response_url", body=body, at=time.monotonic(), path=request.path)
        self.calls.append(call)
        try:
            if self.down:
                return web.Response(status=503)
            blocks = body.get("blocks")
            if blocks is not None and block_errors(blocks):
                return web.Response(status=400, text="invalid_blocks")
            if self.on_post is not None:
                self.on_post(call)
            return web.Response(text="ok")
        finally:
            await self._notify()
