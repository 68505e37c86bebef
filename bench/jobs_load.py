"""`/jobs` under load: bursts of 200 concurrent signed slash commands across 3 connectors to a
real bot process (HTTP mode), Timbal answering in 200 ms, the replies read at the fake
Slack's response URLs. The fake Slack runs in a process of its own (`bench.slack_process`),
so the load generator and the clock of the replies are not one busy event loop.

- ack: from sending the request to the bot's HTTP 200;
- reply: from sending the request to the reply's arrival at the response URL;
- upstream calls: requests the fake Timbal received during the burst.

"Sending" is when the request's body was written to its socket (aiohttp's
`on_request_chunk_sent`): the load generator starts 200 sends in one turn of its loop and
aiohttp writes each a turn later, ~15 ms after the first send began on a 2-core machine, time
that is the generator's, not the bot's. The figure from the start of each send is kept too
(`reply_p99_from_call_ms`).

Each burst starts cold (after JOBS_CACHE_SECONDS), so it is the single-flight that counts.
One burst before them warms up what only a bot's first crowd pays (connections opened to the
bot and from it, code paths run for the first time); it is reported apart (`warmup_*`). The
measured bursts are 5.5 s apart, so they find the connections of the one before still open;
the bursts after a quiet spell (`quiet_*`) find none: a crowd after a quiet minute.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.procs import BotProcess, log_file, slack_process, until
from bench.stats import median, percentile
from bot.sim.slash import SignedRequest, sign, slash_command_body
from tests.fakes import FakeSlack, FakeTimbal
from tests.proc import clean_env
from tests.redis_server import free_port

SECRET = "bench-signing-secret"
TIMBAL_LATENCY = 0.2
CACHE_SECONDS = 5.0
# Longer than every keep-alive in play: aiohttp's 15 s (the bot's replies, the load
# generator's connections to the bot) and httpx's 5 s (the bot's Timbal client).
QUIET_SECONDS = 16.0
WARMUP, WARM, QUIET = "warm-up", "warm", "quiet"


@dataclass
class LoadFigures:
    requests: int
    ack_p50_ms: float
    ack_p99_ms: float
    reply_p50_ms: float
    reply_p99_ms: float
    upstream_calls: int  # the most any burst cost, the warm-up burst included
    reply_p99_from_call_ms: float = 0.0  # the clock started as each send began
    warmup_reply_p99_ms: float = 0.0
    quiet_reply_p99_ms: float | None = None  # bursts after a quiet spell (see `measure`)
    quiet_seconds: float = 0.0
    timbal_ms: float = TIMBAL_LATENCY * 1000
    samples: dict[str, list[float]] = field(default_factory=dict)


async def send(
    http: aiohttp.ClientSession,
    base: str,
    request: SignedRequest,
    tag: str,
    called: dict[str, float],
    sent: dict[str, float],
    acked: list[float],
) -> None:
    """One signed /jobs, as Slack sends it; notes when it went and how long its ack took."""
    called[tag] = time.monotonic()
    async with http.post(
        f"{base}/slack/events",
        data=request.body.encode(),
        headers=request.headers,
        trace_request_ctx={"tag": tag, "sent": sent},
    ) as response:
        await response.read()
    acked.append((time.monotonic() - sent[tag]) * 1000)
    response.raise_for_status()


def check_replies(tags: list[str], found: list[list[Any]]) -> None:
    """Each command answered once, with a listing: a fast apology is not a fast answer."""
    answered = sorted(path.rsplit("/", 1)[-1] for path, _, _ in found)
    not_listings = sum(1 for *_, listing in found if not listing)
    if answered != sorted(tags) or not_listings:
        raise RuntimeError(
            f"{len(found)} replies to {len(tags)} commands, {len(set(answered))} commands "
            f"answered, {not_listings} replies not a listing; see {log_file('jobs-load')}"
        )


def written_at() -> aiohttp.TraceConfig:
    """Notes, per request, when its body was written to the socket (see the module doc)."""

    async def chunk_sent(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestChunkSentParams
    ) -> None:
        info = context.trace_request_ctx
        info["sent"][info["tag"]] = time.monotonic()

    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(chunk_sent)
    return trace


async def upstream(http: aiohttp.ClientSession, control: str) -> int:
    async with http.get(f"{control}/timbal") as response:
        return int((await response.json())["requests"])


async def measure(
    redis_url: str, *, bursts: int, size: int, quiet_bursts: int = 0, quiet: float = QUIET_SECONDS
) -> LoadFigures:
    """`bursts` measured after the warm-up, 5.5 s apart; then `quiet_bursts`, each after
    `quiet` seconds without a request (every kept-alive connection closed by then)."""
    schedule = [WARMUP] + [WARM] * bursts + [QUIET] * quiet_bursts
    async with slack_process(TIMBAL_LATENCY) as (slack_url, timbal_url, control):
        return await _measure(
            redis_url, slack_url, timbal_url, control, schedule=schedule, size=size, quiet=quiet
        )


async def _measure(
    redis_url: str,
    slack_url: str,
    timbal_url: str,
    control: str,
    *,
    schedule: list[str],
    size: int,
    quiet: float,
) -> LoadFigures:
    port = free_port()
    env = clean_env(
        TIMBAL_API_URL=timbal_url,
        TIMBAL_API_KEY=FakeTimbal.api_key,
        TIMBAL_ORG_ID=FakeTimbal.org_id,
        SLACK_BOT_TOKEN=FakeSlack.bot_token,
        SLACK_API_URL=f"{slack_url}/api/",
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_MODE="http",
        PORT=str(port),
        HOST="127.0.0.1",
        REDIS_URL=redis_url,
        LOG_LEVEL=os.environ.get("BENCH_BOT_LOG_LEVEL", "WARNING"),
        JOBS_CACHE_SECONDS=str(CACHE_SECONDS),
    )
    bot = BotProcess(env, "--no-poller", "--no-notifier", log=log_file("jobs-load"))
    base = f"http://127.0.0.1:{port}"
    acks: list[list[float]] = []
    replies: list[list[float]] = []
    from_call: list[list[float]] = []
    quiet_replies: list[list[float]] = []
    calls: list[int] = []
    try:
        await bot.start()
        # aiohttp, the lighter client: the load generator shares the machine with the bot.
        connector = aiohttp.TCPConnector(limit=size)
        async with aiohttp.ClientSession(connector=connector, trace_configs=[written_at()]) as http:

            async def healthy() -> bool:
                try:
                    async with http.get(f"{base}/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await until(healthy, 60, "the bot's /healthz")
            for burst, kind in enumerate(schedule):
                if burst:  # the cache cold again; after a quiet spell, the connections too
                    await asyncio.sleep(quiet if kind == QUIET else CACHE_SECONDS + 0.5)
                async with http.post(f"{control}/clear") as cleared:
                    cleared.raise_for_status()
                before = await upstream(http, control)
                called: dict[str, float] = {}
                sent: dict[str, float] = {}
                acked: list[float] = []
                tags = [f"b{burst}-{i}" for i in range(size)]
                signed = [  # signed up front: the burst is the bot's to absorb
                    sign(
                        slash_command_body(
                            text=f"conn-{i % 3}", response_url=f"{control}/response/{tag}"
                        ),
                        SECRET,
                    )
                    for i, tag in enumerate(tags)
                ]
                await asyncio.gather(
                    *(
                        send(http, base, r, tag, called, sent, acked)
                        for r, tag in zip(signed, tags, strict=True)
                    )
                )

                # One request that returns once every reply has arrived: polling the sink
                # during the burst would take CPU from the bot it measures.
                async with http.get(f"{control}/calls", params={"at_least": size}) as response:
                    found: list[list[Any]] = await response.json()
                tagged = [(path.rsplit("/", 1)[-1], float(at)) for path, at, _ in found]
                check_replies(tags, found)
                calls.append(await upstream(http, control) - before)
                if kind == QUIET:
                    quiet_replies.append([(at - sent[tag]) * 1000 for tag, at in tagged])
                    continue
                acks.append(acked)
                replies.append([(at - sent[tag]) * 1000 for tag, at in tagged])
                from_call.append([(at - called[tag]) * 1000 for tag, at in tagged])
    finally:
        await bot.stop()
    warmup = percentile(replies[0], 99)
    acks, replies, from_call = acks[1:], replies[1:], from_call[1:]
    quiet_p99 = [percentile(r, 99) for r in quiet_replies]
    warm_p99 = [percentile(r, 99) for r in replies]
    return LoadFigures(
        requests=size,
        ack_p50_ms=median([percentile(a, 50) for a in acks]),
        ack_p99_ms=median([percentile(a, 99) for a in acks]),
        reply_p50_ms=median([percentile(r, 50) for r in replies]),
        reply_p99_ms=median([percentile(r, 99) for r in replies]),
        upstream_calls=max(calls),
        reply_p99_from_call_ms=median([percentile(r, 99) for r in from_call]),
        warmup_reply_p99_ms=warmup,
        quiet_reply_p99_ms=median(quiet_p99) if quiet_p99 else None,
        quiet_seconds=quiet,
        samples={
            "calls": [float(c) for c in calls],
            "reply_p99_per_burst": warm_p99,
            "quiet_reply_p99_per_burst": quiet_p99,
        },
    )
