"""Serve an aiohttp application on a host and port (0: a free one) and say which port it got.

The listen backlog is 1,024 connections (aiohttp's default, 128, makes the 129th of a crowd
of slash commands arriving together wait a second for its SYN to be sent again).
"""

from __future__ import annotations

from aiohttp import web

BACKLOG = 1024  # the kernel caps it at net.core.somaxconn


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start `app`; return its runner (call `cleanup()` to stop) and the port it listens on."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=BACKLOG).start()
    except BaseException:
        await runner.cleanup()
        raise
    # The runner's public list of bound addresses; (host, port) or (host, port, flow, scope).
    bound: int = runner.addresses[0][1]
    return runner, bound
