"""A fake Slack Socket Mode endpoint: a real WebSocket server on 127.0.0.1, as slack_sdk sees it.

The protocol, as slack_sdk's SocketModeClient speaks it: the app calls `apps.connections.open`
with its app-level token (FakeSlack answers it with `refusal` and `new_url`) and gets a
WebSocket URL; it opens a WebSocket there and receives `{"type": "hello", ...}`. Slack then
sends envelopes (`{"envelope_id", "type", "payload", "accepts_response_payload"}`) and the app
acks each by sending `{"envelope_id": ..., "payload"?: ...}` back on the socket. Slack asks an
app to reconnect with `{"type": "disconnect", "reason": "refresh_requested"}`, and a connection
can also just close (a clean close frame) or break (the TCP connection dies).

Hand-written because no library offers a Socket Mode server; aiohttp provides the WebSocket.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from bot.app.serve import serve
from bot.sim.slash import slash_command_body

DEFAULT_APP_TOKEN = "xapp-1-A0APP-1-test-app-token"  # noqa: S105 - a fake's fixed credential


@dataclass(frozen=True, slots=True)
class Ack:
    """What the app sent back for one envelope."""

    envelope_id: str
    payload: dict[str, Any] | None
    at: float  # time.monotonic()
    connection: int  # the number of the connection it came on (1 for the first)


@dataclass
class Connection:
    number: int
    ticket: str
    socket: web.WebSocketResponse
    request: web.Request


@dataclass
class FakeSocketMode:
    """Start it with `start()` (or `FakeSlack.start_socket_mode()`, which also attaches it)."""

    app_token: str = DEFAULT_APP_TOKEN
    app_id: str = "A0APP"
    envelopes: dict[str, dict[str, Any]] = field(default_factory=dict)  # what was sent, by id
    acks: dict[str, Ack] = field(default_factory=dict)  # the first ack of each envelope
    unexpected: list[str] = field(default_factory=list)  # client messages that are not acks
    tickets: list[str] = field(default_factory=list)  # issued by apps.connections.open
    connections: int = 0  # accepted so far, over the fake's life
    _open: list[Connection] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _port: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Condition | None = None

    # --- lifecycle -------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeSocketMode:
        app = web.Application()
        app.router.add_get("/link/", self._websocket)
        self._runner, self._port = await serve(app, host, port)
        self._changed = asyncio.Condition()
        return self

    async def stop(self) -> None:
        for conn in list(self._open):
            await conn.socket.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- apps.connections.open --------------------------------------------------------
    def refusal(self, token: str | None) -> str | None:
        """The error `apps.connections.open` answers for `token`, or None when it is accepted."""
        if not token:
            return "not_authed"
        if token.startswith(("xoxb-", "xoxp-")):
            return "not_allowed_token_type"
        if token != self.app_token:
            return "invalid_auth"
        return None

    def new_url(self) -> str:
        """A fresh WebSocket URL, as `apps.connections.open` hands out (after `refusal`)."""
        ticket = secrets.token_hex(8)
        self.tickets.append(ticket)
        return f"ws://127.0.0.1:{self._port}/link/?ticket={ticket}&app_id={self.app_id}"

    # --- state -----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return any(not c.socket.closed for c in self._open)

    @property
    def open_connections(self) -> list[int]:
        return [c.number for c in self._open if not c.socket.closed]

    async def wait_connected(self, *, connections: int = 1, within: float = 10.0) -> None:
        """Until `connections` connections were accepted in all and one is open."""
        await self._wait(
            lambda: self.connected and self.connections >= connections,
            within,
            f"{connections} connection(s)",
        )

    async def wait_for_ack(self, envelope_id: str, within: float = 10.0) -> Ack:
        await self._wait(lambda: envelope_id in self.acks, within, f"an ack of {envelope_id}")
        return self.acks[envelope_id]

    async def _wait(self, done: Any, within: float, what: str) -> None:
        assert self._changed is not None, "start() first"
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(done), within)
            except TimeoutError:
                raise TimeoutError(
                    f"no {what} within {within}s; connections={self.connections} "
                    f"open={self.open_connections} acked={sorted(self.acks)}"
                ) from None

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    # --- what Slack sends ---------------------------------------------------------------
    async def send_envelope(
        self, kind: str, payload: dict[str, Any], *, accepts_response_payload: bool = True
    ) -> str:
        """Deliver one envelope on the newest open connection; return its envelope id."""
        conn = self._newest()
        envelope_id = f"env-{next(self._ids)}-{secrets.token_hex(4)}"
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        self.envelopes[envelope_id] = envelope
        await conn.socket.send_json(envelope)
        return envelope_id

    async def send_slash_command(self, text: str, response_url: str, **fields: str) -> str:
        """A slash command with the fields of `bot.sim.slash` (as Slack puts them in a payload)."""
        body = slash_command_body(text=text, response_url=response_url, **fields)
        return await self.send_envelope("slash_commands", dict(parse_qsl(body)))

    async def request_refresh(self, reason: str = "refresh_requested") -> None:
        """Slack's polite `disconnect` message: the app should open a new connection."""
        conn = self._newest()
        await conn.socket.send_json({"type": "disconnect", "reason": reason})

    async def drop(self, *, clean: bool = True) -> None:
        """End every open connection: a close frame, or (clean=False) a dead TCP connection."""
        for conn in list(self._open):
            if clean:
                await conn.socket.close(code=1001, message=b"server going away")
            elif conn.request.transport is not None:
                conn.request.transport.abort()

    def _newest(self) -> Connection:
        for conn in reversed(self._open):
            if not conn.socket.closed:
                return conn
        raise RuntimeError("no open Socket Mode connection to send on")

    # --- the WebSocket --------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self.tickets:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse()  # autoping: pongs slack_sdk's pings with their payload
        await ws.prepare(request)
        self.connections += 1
        conn = Connection(number=self.connections, ticket=ticket, socket=ws, request=request)
        self._open.append(conn)
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": len(self.open_connections),
                    "debug_info": {"host": "fake-applink", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": self.app_id},
                }
            )
            await self._notify()
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    self._receive(conn, message.data)
                    await self._notify()
        finally:
            self._open.remove(conn)
            await self._notify()
        return ws

    def _receive(self, conn: Connection, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("envelope_id"), str):
            self.unexpected.append(data)
            return
        envelope_id = message["envelope_id"]
        payload = message.get("payload")
        if envelope_id not in self.envelopes or envelope_id in self.acks:
            self.unexpected.append(data)  # an ack of nothing we sent, or a second ack
            return
        self.acks[envelope_id] = Ack(
            envelope_id=envelope_id,
            payload=payload if isinstance(payload, dict) else None,
            at=time.monotonic(),
            connection=conn.number,
        )
