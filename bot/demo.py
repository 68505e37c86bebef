"""`timbal-jobs-bot demo`: the real bot against a simulated org and a local Slack stand-in.

No credentials: Timbal is `bot.sim.simulator.SimulatedOrg` behind `FakeTimbal`, Slack is
`FakeSlack`, which prints every message the bot posts. The real runtime runs in between:
poller, outbox, notifier and the `/jobs` handler (reached with signed requests, as Slack
would send them). Redis is the embedded store unless REDIS_URL is set.

One simulated clock, `speed` times faster than real time, runs the org and the bot alike, so
every time shown (started, finished, detected) agrees with every duration; the banner says
how fast it runs. On a terminal the prompt is prompt_toolkit's, redrawn under every message
(`patch_stdout`), so what the user is typing is never overwritten; piped input is read line
by line, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
from prompt_toolkit import PromptSession
from prompt_toolkit.patch_stdout import patch_stdout

from bot.alerts.cards import ACK, BLOCK_PREFIX, MUTE, RUNS
from bot.app.config import SettingsError, load_settings
from bot.app.logs import setup_logging
from bot.app.runtime import Runtime
from bot.domain.subscriptions import EventSet, Mention, MentionKind, Subscription, Target
from bot.sim.console import format_slack_call
from bot.sim.simulator import SimulatedOrg
from bot.sim.slack_api import Call, FakeSlack
from bot.sim.slash import block_actions_body, sign, slash_command_body
from bot.sim.timbal_api import FakeTimbal

DEMO_KEY = "demo-timbal-key"
DEMO_ORG = "org_demo"
DEMO_BOT_TOKEN = "xoxb-demo-token"  # noqa: S105 - the stand-in's own fixed credential
DEMO_SIGNING_SECRET = "demo-signing-secret"  # noqa: S105
DEMO_CHANNEL = "#data-alerts"  # ALERT_CHANNEL: every run that ends
PAYMENTS_CHANNEL = "#payments-oncall"  # subscribed to stripe-* failures, pinging its on-call
PAYMENTS_ONCALL = Mention(kind=MentionKind.GROUP, id="S0PAYMENTS", label="@payments-oncall")

BANNER = """\
timbal-jobs-bot demo: a simulated Timbal org, the real bot, and a Slack stand-in.
The simulated clock runs {speed:g}× faster than real time: a 10-minute job takes {ten:g} \
seconds here, and every time shown is simulated time (it started at {start} UTC).
Two channels get alerts, printed below as they happen: {channel} gets every run that ends
(ALERT_CHANNEL), and {payments} subscribed to failures of stripe-*, pinging
@payments-oncall. A failure opens an incident: its alert is the incident's card, further
failures go into the card's thread and update it, the next success closes it (watch
stripe-payments: it fails, fails again, then recovers).
You type in {channel}: /jobs, /jobs <connector>, /jobs state=failed, /jobs status,
/jobs subscriptions all, /jobs mute hubspot-crm 30m, /jobs help; and, as if you clicked a
card's buttons: ack <connector>, runs <connector>, mute-card <connector> 1h|4h|24h.
Ctrl-D or Ctrl-C quits.
Connectors: {connectors}
"""


class SimulatedClock:
    """Real time from `start`, `speed` times faster: what the org and the bot both read."""

    def __init__(self, speed: float, start: datetime | None = None) -> None:
        self.speed = speed
        self.start = start if start is not None else datetime.now(UTC)
        self._real_start = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._real_start) * self.speed)


def banner(clock: SimulatedClock, connectors: list[str]) -> str:
    return BANNER.format(
        speed=clock.speed,
        ten=600 / clock.speed,
        start=clock.start.strftime("%H:%M"),
        channel=DEMO_CHANNEL,
        payments=PAYMENTS_CHANNEL,
        connectors=", ".join(connectors),
    )


def interactive() -> bool:
    """A person at a terminal (prompt_toolkit's prompt), or input piped in (line by line)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _printer(call: Call) -> None:
    print(format_slack_call(call, color=sys.stdout.isatty()), flush=True)


def _stdin_is_pollable() -> bool:
    """A terminal, pipe or socket can be watched by the event loop; /dev/null or a file cannot."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()


async def _stdin_lines(queue: asyncio.Queue[str | None]) -> None:
    if not _stdin_is_pollable():  # read a file (or /dev/null) line by line off the loop
        while line := await asyncio.to_thread(sys.stdin.readline):
            await queue.put(line.strip())
        await queue.put(None)
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        raw = await reader.readline()
        if not raw:
            await queue.put(None)
            return
        await queue.put(raw.decode(errors="replace").strip())


async def _slash(runtime: Runtime, slack: FakeSlack, http: httpx.AsyncClient, line: str) -> None:
    text = line.removeprefix("/jobs").strip()
    body = slash_command_body(
        text=text,
        response_url=slack.response_url("demo"),
        channel_id=DEMO_CHANNEL,
        channel_name=DEMO_CHANNEL.lstrip("#"),
    )
    request = sign(body, DEMO_SIGNING_SECRET)
    response = await http.post(
        f"{runtime.base_url}/slack/events", content=request.body, headers=request.headers
    )
    if response.status_code != 200:
        print(f"(the bot answered HTTP {response.status_code})", flush=True)


CLICKS = {"ack": ACK, "runs": RUNS, "mute-card": MUTE}
MUTE_CHOICES = {"1h": "3600", "4h": "14400", "24h": "86400"}


def _card_of(slack: FakeSlack, connector: str) -> tuple[str, str, str] | None:
    """(channel, ts, block id) of the newest open card of `connector` (it has buttons), in
    the channel the user types in when it has one there."""
    found: list[tuple[str, str, str]] = []
    for message in reversed(slack.messages):
        if message["thread_ts"] or connector not in str(message["text"]):
            continue
        for block in message.get("blocks") or []:
            block_id = str(block.get("block_id") or "")
            if block.get("type") == "actions" and block_id.startswith(BLOCK_PREFIX):
                found.append((str(message["channel"]), str(message["ts"]), block_id))
    here = [f for f in found if f[0] == DEMO_CHANNEL]
    return (here or found)[0] if found else None


async def _click(runtime: Runtime, slack: FakeSlack, http: httpx.AsyncClient, line: str) -> None:
    """`ack <connector>` and the like: a click on that connector's card, signed as Slack does."""
    word, *args = line.split()
    if not args:
        print(f"Say which connector: {word} <connector>.", flush=True)
        return
    found = _card_of(slack, args[0])
    if found is None:
        print(f"No open incident card of {args[0]!r} yet (it has not failed, or recovered).")
        return
    channel, ts, block_id = found
    selected = None
    if word == "mute-card":
        selected = MUTE_CHOICES.get(args[1] if len(args) > 1 else "", "")
        if not selected:
            print("Say for how long: mute-card <connector> 1h|4h|24h.", flush=True)
            return
    body = block_actions_body(
        action_id=CLICKS[word],
        block_id=block_id,
        response_url=slack.response_url("demo"),
        channel_id=channel,
        message_ts=ts,
        value=block_id.removeprefix(BLOCK_PREFIX) if selected is None else None,
        selected=selected,
        user_id="U0YOU",
        user_name="you",
    )
    request = sign(body, DEMO_SIGNING_SECRET)
    response = await http.post(
        f"{runtime.base_url}/slack/events", content=request.body, headers=request.headers
    )
    if response.status_code != 200:
        print(f"(the bot answered HTTP {response.status_code})", flush=True)


async def run_demo(*, speed: float = 60.0, seconds: float | None = None, seed: int = 7) -> int:
    if not interactive():
        return await _run(speed=speed, seconds=seconds, seed=seed, tty=False)
    # Everything printed while the prompt is up goes above it, and the prompt is redrawn.
    with patch_stdout(raw=True):
        return await _run(speed=speed, seconds=seconds, seed=seed, tty=True)


async def _run(*, speed: float, seconds: float | None, seed: int, tty: bool) -> int:
    setup_logging(os.environ.get("LOG_LEVEL", "WARNING").upper(), "text", [])
    clock = SimulatedClock(speed)
    org = SimulatedOrg(seed=seed, clock=clock, speed=1.0)  # the clock itself runs fast
    timbal = await FakeTimbal(api_key=DEMO_KEY, org_id=DEMO_ORG, source=org.jobs).start()
    slack = await FakeSlack(bot_token=DEMO_BOT_TOKEN, on_post=_printer).start()
    try:
        settings = load_settings(
            timbal_api_url=timbal.base_url,
            timbal_api_key=DEMO_KEY,
            timbal_org_id=DEMO_ORG,
            slack_bot_token=DEMO_BOT_TOKEN,
            slack_signing_secret=DEMO_SIGNING_SECRET,
            slack_app_token=None,
            slack_mode="http",
            slack_api_url=slack.base_url,
            host="127.0.0.1",
            port=0,
            alert_channel=DEMO_CHANNEL,
            poll_interval_seconds=1.0,
            redis_url=os.environ.get("REDIS_URL") or None,
        )
    except SettingsError as exc:
        print(f"timbal-jobs-bot demo: {exc}", file=sys.stderr)
        await slack.stop()
        await timbal.stop()
        return 2
    runtime = Runtime(settings, clock=clock)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stop_event.set)
    if seconds is not None:
        loop.call_later(seconds, runtime.stop_event.set)
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    reader = asyncio.create_task(_prompt_lines(lines) if tty else _stdin_lines(lines))
    try:
        await runtime.start()
        await runtime.subscriptions.subscribe(  # as `/jobs subscribe` in that channel would
            Subscription(
                channel=PAYMENTS_CHANNEL,
                target=Target(value="stripe-*"),
                events=EventSet.FAILURES,
                mention=PAYMENTS_ONCALL,
                at=clock(),
            )
        )
        print(banner(clock, org.connector_ids), flush=True)
        if not tty:
            print("> ", end="", flush=True)
        async with httpx.AsyncClient(timeout=10) as http:
            await _prompt_loop(
                runtime, slack, http, lines, keep_running=seconds is not None, tty=tty
            )
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await runtime.close()
        await slack.stop()
        await timbal.stop()
    return 0


async def _prompt_lines(queue: asyncio.Queue[str | None]) -> None:
    """Lines typed at prompt_toolkit's prompt; None at Ctrl-D or Ctrl-C."""
    session: PromptSession[str] = PromptSession()
    while True:
        try:
            line = await session.prompt_async("> ")
        except (EOFError, KeyboardInterrupt):
            await queue.put(None)
            return
        await queue.put(line.strip())


async def _prompt_loop(
    runtime: Runtime,
    slack: FakeSlack,
    http: httpx.AsyncClient,
    lines: asyncio.Queue[str | None],
    *,
    keep_running: bool,
    tty: bool,
) -> None:
    stop = asyncio.create_task(runtime.stop_event.wait())
    try:
        while not runtime.stop_event.is_set():
            get = asyncio.create_task(lines.get())
            done, _ = await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                return
            line = get.result()
            if line is None:  # end of input
                if keep_running:
                    await runtime.stop_event.wait()
                return
            if line.startswith("/jobs"):
                await _slash(runtime, slack, http, line)
            elif line and line.split(maxsplit=1)[0] in CLICKS:
                await _click(runtime, slack, http, line)
            elif line in ("quit", "exit"):
                return
            elif line:
                print("Try /jobs, /jobs <connector>, /jobs help or ack <connector>.", flush=True)
            if not tty:  # prompt_toolkit draws its own prompt
                print("> ", end="", flush=True)
    finally:
        stop.cancel()
