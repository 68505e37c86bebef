"""Serve an aiohttp application on a host and port (0: a free one) and say which port it got."""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start `app`; return its runner (call `cleanup()` to stop) and the port it listens on."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp keeps the listening server private; the port is needed
    assert server is not None
    bound: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return runner, bound
