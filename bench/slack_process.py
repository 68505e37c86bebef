"""The fakes of the /jobs load benchmark, in a process of their own, away from the load
generator's busy loop: Timbal answering in `--delay` seconds (`FakeTimbal`, 150 jobs of 3
connectors), Slack's Web API (`FakeSlack`, for the bot's start-up), and response URLs that
only note when each reply arrived (the fake's check of every block would be what is
measured, not the bot). CLOCK_MONOTONIC is one clock for every process of the machine.

    python -m bench.slack_process --delay 0.2
        prints "ports SLACK TIMBAL SINK"; replies go to SINK/response/<tag>;
        GET SINK/calls lists [[path, monotonic time, is a listing], ...] (`?at_least=N`: once N have
        arrived, so the load generator waits with one request instead of polling during the
        burst it measures); POST SINK/clear;
        GET SINK/timbal counts Timbal's requests
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web

from bot.app.serve import serve
from bot.sim.slack_api import FakeSlack
from bot.sim.timbal_api import FakeTimbal, make_job

LISTING = b"jobs for connector"  # in a listing's reply (not in an apology or an error)


async def main(delay: float) -> None:
    slack = await FakeSlack().start()
    timbal = await FakeTimbal(delay=delay).start()
    for i in range(150):
        timbal.jobs.append(make_job(f"j{i:03d}", connector_id=f"conn-{i % 3}", state="running"))
    arrivals: list[list[object]] = []
    arrived = asyncio.Condition()

    async def reply(request: web.Request) -> web.Response:
        body = await request.read()  # arrived once read whole
        arrivals.append([request.path, time.monotonic(), LISTING in body])
        async with arrived:
            arrived.notify_all()
        return web.Response(text="ok")

    async def calls(request: web.Request) -> web.Response:
        wanted = int(request.query.get("at_least", "0"))
        async with arrived:
            await asyncio.wait_for(arrived.wait_for(lambda: len(arrivals) >= wanted), 60)
        return web.json_response(arrivals)

    async def clear(request: web.Request) -> web.Response:
        arrivals.clear()
        return web.json_response({})

    async def upstream(request: web.Request) -> web.Response:
        return web.json_response({"requests": len(timbal.requests)})

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/response/{tag}", reply)
    app.router.add_get("/calls", calls)
    app.router.add_post("/clear", clear)
    app.router.add_get("/timbal", upstream)
    runner, port = await serve(app, "127.0.0.1", 0)
    slack_port = slack.base_url.rsplit(":", 1)[1].split("/")[0]
    timbal_port = timbal.base_url.rsplit(":", 1)[1]
    print(f"ports {slack_port} {timbal_port} {port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await timbal.stop()
        await slack.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.2)
    asyncio.run(main(parser.parse_args().delay))
