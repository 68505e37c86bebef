"""A fake Slack Web API over real HTTP, with Slack's documented limits.

It answers `auth.test`, `chat.postMessage` (threads included), `chat.update` (in place;
`message_not_found` for a deleted message), `chat.postEphemeral`, `conversations.history` and
`conversations.replies` (paged, with the 2025 limits of non-Marketplace apps when
`history_tier=LIMITED`; see `bot.sim.slack_history`), `conversations.info` (membership,
archived, private; see `channel_info`) and response URLs (`/response/{id}`). A channel in
`non_threadable` refuses thread replies with Slack's
`restricted_action_non_threadable_channel` and takes top-level posts. It records
every call, checks the bot token, rejects blocks over Block Kit's limits with
`invalid_blocks` and text over 40,000 characters with `msg_too_long`, and can be told to fail
(429 with `Retry-After`, 5xx, `ok: false` with an error), for all calls or for one channel, or
to accept a message and answer late (`hold`). With a Socket Mode fake attached
(`start_socket_mode()`) it also answers `apps.connections.open`, which checks the app-level
token instead of the bot token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.app.serve import serve
from bot.sim.slack_history import TIER_3, HistoryTier, RateLimiter, history, page, thread
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
    needed: str | None = None  # missing_scope: the scope Slack names as needed


@dataclass
class Hold:
    """Accept a call (the message is stored), then answer only after `seconds`: a Slack that
    took the post but whose answer is slow to come back."""

    method: str
    seconds: float
    channel: str | None = None
    times: int = 1


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
    # What auth.test reports in `x-oauth-scopes` (the manifest's bot scopes).
    scopes: str = (
        "commands,chat:write,chat:write.public,channels:history,groups:history,"
        "channels:read,groups:read"
    )
    team: str = "Timbal Test"
    team_id: str = "T0TEST"
    known_channels: set[str] | None = None  # None: every channel exists
    non_threadable: set[str] = field(default_factory=set)  # channels that refuse replies
    # conversations.info of a channel, over the default (a public channel the bot is in),
    # e.g. {"C1": {"is_member": False}} or {"C2": {"is_archived": True}}
    channel_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    min_channel_interval: float | None = None  # answer 429 when posted faster than this
    on_post: Callable[[Call], None] | None = None  # e.g. the demo's pretty printer
    calls: list[Call] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    down: bool = False  # every call answers 503 while set
    history_tier: HistoryTier = TIER_3  # LIMITED: 1 request a minute, 15 messages a page
    holds: list[Hold] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)  # accepted chat.update calls
    # Awaited before each API call is answered (e.g. to kill the bot on a poison message).
    on_request: Callable[[Call], Awaitable[None]] | None = None
    socket_mode: FakeSocketMode | None = None  # set by start_socket_mode()
    _runner: web.AppRunner | None = None
    _port: int = 0
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _last_post: dict[str, float] = field(default_factory=dict)
    _limiter: RateLimiter | None = None
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

    def hold(self, method: str, seconds: float, **kwargs: Any) -> None:
        self.holds.append(Hold(method=method, seconds=seconds, **kwargs))

    def delete_message(self, channel: str, ts: str) -> None:
        """A person deleted a message in Slack."""
        self.messages = [
            m for m in self.messages if not (m["channel"] == channel and m["ts"] == ts)
        ]

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
            if self.on_request is not None:
                await self.on_request(call)
            response = self._answer(request, method, body, call)
            hold = self._held(method, call.channel) if response.status == 200 else None
            if hold is not None:
                await self._notify()  # the message is in; its answer comes late
                await asyncio.sleep(hold.seconds)
            return response
        finally:
            await self._notify()

    def _held(self, method: str, channel: str | None) -> Hold | None:
        for hold in self.holds:
            if hold.method == method and hold.channel in (None, channel):
                hold.times -= 1
                if hold.times <= 0:
                    self.holds.remove(hold)
                return hold
        return None

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
            refusal: dict[str, Any] = {"ok": False, "error": scripted.error}
            if scripted.needed is not None:
                refusal |= {"needed": scripted.needed, "provided": self.scopes}
            return web.json_response(refusal, headers=headers)
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
                },
                headers={"x-oauth-scopes": self.scopes},
            )
        if method in ("chat.postMessage", "chat.postEphemeral"):
            return self._post(method, body, call)
        if method == "chat.update":
            return self._update(body, call)
        if method in ("conversations.history", "conversations.replies"):
            return self._history(method, body)
        if method == "conversations.info":
            return self._info(body)
        return web.json_response({"ok": False, "error": "unknown_method"})

    def _refused(self, channel: str | None, body: dict[str, Any]) -> web.Response | None:
        """Slack's answer to a message it will not take (channel, size, blocks), or None."""
        if not channel:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        if self.known_channels is not None and channel not in self.known_channels:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        text = body.get("text") or ""
        blocks = body.get("blocks")
        if not text and not blocks:
            return web.json_response({"ok": False, "error": "no_text"})
        if len(str(text)) > MAX_MESSAGE_TEXT:
            return web.json_response({"ok": False, "error": "msg_too_long"})
        if blocks:
            errors = block_errors(blocks)
            if errors:
                return web.json_response({"ok": False, "error": "invalid_blocks", "errors": errors})
        return None

    def _post(self, method: str, body: dict[str, Any], call: Call) -> web.Response:
        channel = call.channel
        refused = self._refused(channel, body)
        if refused is not None:
            return refused
        assert channel is not None
        if self.min_channel_interval is not None and method == "chat.postMessage":
            last = self._last_post.get(channel)
            if last is not None and call.at - last < self.min_channel_interval:
                return web.json_response(
                    {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
                )
        thread_ts = body.get("thread_ts")
        if thread_ts and channel in self.non_threadable:
            return web.json_response(
                {"ok": False, "error": "restricted_action_non_threadable_channel"}
            )
        if thread_ts and not any(
            m["channel"] == channel and m["ts"] == thread_ts for m in self.messages
        ):
            return web.json_response({"ok": False, "error": "thread_not_found"})
        self._last_post[channel] = call.at
        message = {
            "method": method,
            "channel": channel,
            "ts": f"{int(time.time())}.{next(self._ts):06d}",
            "thread_ts": thread_ts,
            "text": body.get("text") or "",
            "blocks": body.get("blocks"),
            "metadata": body.get("metadata"),
            "at": call.at,  # time.monotonic() when Slack accepted it
        }
        self.messages.append(message)
        if self.on_post is not None:
            self.on_post(call)
        return web.json_response(
            {"ok": True, "channel": channel, "ts": message["ts"], "message": message}
        )

    def _update(self, body: dict[str, Any], call: Call) -> web.Response:
        """chat.update: the message changes in place (text, blocks, metadata)."""
        channel = call.channel
        refused = self._refused(channel, body)
        if refused is not None:
            return refused
        ts = str(body.get("ts") or "")
        found = [m for m in self.messages if m["channel"] == channel and m["ts"] == ts]
        if not found:
            return web.json_response({"ok": False, "error": "message_not_found"})
        message = found[0]
        message["text"] = body.get("text") or ""
        message["blocks"] = body.get("blocks") or None
        if body.get("metadata"):
            message["metadata"] = body["metadata"]
        self.updates.append({"channel": channel, "ts": ts, "text": message["text"]} | body)
        if self.on_post is not None:
            self.on_post(call)
        return web.json_response(
            {"ok": True, "channel": channel, "ts": ts, "text": message["text"]}
        )

    def _info(self, body: dict[str, Any]) -> web.Response:
        channel = str(body.get("channel") or "")
        info = self.channel_info.get(channel, {})
        private = channel.startswith("G") or bool(info.get("is_private"))
        member = bool(info.get("is_member", True))
        known = self.known_channels is None or channel in self.known_channels
        if not channel or not known or (private and not member):
            return web.json_response({"ok": False, "error": "channel_not_found"})
        found = {
            "id": channel,
            "name": channel.lower(),
            "is_channel": not channel.startswith("D"),
            "is_private": private,
            "is_im": channel.startswith("D"),
            "is_mpim": False,
            "is_archived": False,
            "is_member": member,
        } | info
        return web.json_response({"ok": True, "channel": found})

    def _history(self, method: str, body: dict[str, Any]) -> web.Response:
        if self._limiter is None or self._limiter.tier != self.history_tier:
            self._limiter = RateLimiter(self.history_tier)
        wait = self._limiter.retry_after(method, time.monotonic())
        if wait:
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(wait)},
            )
        channel = body.get("channel")
        if self.known_channels is not None and channel not in self.known_channels:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        posts = [m for m in self.messages if m["method"] == "chat.postMessage"]
        if method == "conversations.history":
            found = history(posts, channel)
        else:
            found = thread(posts, channel, str(body.get("ts") or ""))
            if not found:
                return web.json_response({"ok": False, "error": "thread_not_found"})
        return web.json_response(page(found, body, self.history_tier))

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
