"""Serve an aiohttp application on a host and port (0: a free one) and say which port it got."""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start `app`; return its runner (call `cleanup()` to stop) and the port it listens on."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    # The runner's public list of bound addresses; (host, port) or (host, port, flow, scope).
    bound: int = runner.addresses[0][1]
    return runner, bound
