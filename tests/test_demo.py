"""`timbal-jobs-bot demo`, driven as a user drives it: a subprocess with a prompt."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime

from tests.proc import clean_env

ALERTS = "── #data-alerts"
REPLY = "/jobs reply, only you can see it"


async def test_demo_posts_alerts_and_answers_jobs() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "demo",
        env=clean_env(),  # no credentials, no REDIS_URL: the embedded store
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    seen: list[str] = []

    async def read_until(done: Callable[[], bool], within: float) -> None:
        assert proc.stdout is not None
        async with asyncio.timeout(within):
            while not done():
                line = await proc.stdout.readline()
                if not line:
                    raise AssertionError("the demo exited early:\n" + "".join(seen))
                seen.append(line.decode())

    def printed(text: str) -> bool:
        return any(text in line for line in seen)

    def alerted(kind: str) -> bool:  # the line after an alert's channel rule is its header
        return any(
            line.startswith(ALERTS) and kind in seen[i + 1] for i, line in enumerate(seen[:-1])
        )

    try:
        await read_until(lambda: printed("Connectors:"), within=30)
        proc.stdin.write(b"/jobs stripe-payments\n")
        await proc.stdin.drain()
        await read_until(lambda: printed(REPLY) and printed("Showing"), within=30)
        await read_until(lambda: alerted("failed") and alerted("succeeded"), within=60)
        # A second channel, subscribed to stripe-* failures only, pinging its on-call.
        await read_until(lambda: printed("── #payments-oncall"), within=60)
        # The incident of stripe-payments: its card, acknowledged from the prompt (a signed
        # click), a further failure in its thread, the card updated, then its recovery.
        await read_until(lambda: printed("Failed once since"), within=60)
        proc.stdin.write(b"ack stripe-payments\n")
        await proc.stdin.drain()
        await read_until(lambda: printed("You acknowledged the incident of"), within=30)
        await read_until(lambda: printed("Acknowledged by @you"), within=30)
        await read_until(lambda: printed("failed again"), within=60)
        await read_until(lambda: printed("Recovered after 2 failures"), within=90)
        proc.stdin.close()  # end of input ends the demo
        async with asyncio.timeout(30):
            seen.append((await proc.stdout.read()).decode())  # the rest, to the end
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = "".join(seen)
    reply = output[output.index(REPLY) :]
    assert "stripe-payments" in reply
    assert "hubspot-crm" not in reply.split("Showing")[0]  # the connector filter held
    assert "state is NOT persisted" in output  # said at start, with REDIS_URL unset
    # No traceback of ours (a simulated error message may quote one, inside its code block).
    assert not any(line.startswith("Traceback") for line in output.splitlines())
    assert "updated) ──" in output and "↳ reply in thread" in output
    assert code == 0
    assert "The simulated clock runs 60× faster than real time" in output
    payments = [
        seen[i + 1] for i, line in enumerate(seen[:-1]) if line.startswith("── #payments-oncall")
    ]
    assert payments and all("stripe-payments failed" in header for header in payments)
    assert_times_agree_with_durations(output)


def minutes(text: str) -> float:
    """'5m 55s' or '48.2s' or '1h 02m' as minutes."""
    total = 0.0
    for amount, unit in re.findall(r"([\d.]+)([hms])", text):
        total += float(amount) * {"h": 60.0, "m": 1.0, "s": 1 / 60}[unit]
    return total


def assert_times_agree_with_durations(output: str) -> None:
    """In every alert with figures: finished - started is the duration (to the minute)."""
    checked = 0
    for alert in output.split(ALERTS)[1:]:
        found = dict(re.findall(r"^(Duration|Started|Finished): (.+)$", alert, re.MULTILINE))
        if len(found) < 3:
            continue
        started, finished = (
            datetime.strptime(found[k], "%Y-%m-%d %H:%M UTC") for k in ("Started", "Finished")
        )
        shown = (finished - started).total_seconds() / 60
        assert abs(shown - minutes(found["Duration"])) <= 1.0, found
        checked += 1
    assert checked, "no alert with start, finish and duration was printed"


class Terminal:
    """The demo on a pseudo-terminal, as a person runs it; what it drew, escapes removed."""

    ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")

    def __init__(self) -> None:
        self.master, slave = pty.openpty()
        env = clean_env(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="120", LINES="40")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "demo"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            close_fds=True,
        )
        os.close(slave)
        self.raw = b""

    def text(self, start: int = 0) -> str:
        return self.ESCAPES.sub(b"", self.raw[start:]).decode(errors="replace")

    def read_until(self, done: Callable[[], bool], within: float) -> None:
        """Keep reading (a full pty would block the demo) until `done()`, or fail."""
        deadline = time.monotonic() + within
        while not done():
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.master], [], [], max(left, 0))
            if not ready:
                raise AssertionError("not seen in time; the screen ends:\n" + self.text()[-2000:])
            try:
                self.raw += os.read(self.master, 65536)
            except OSError:  # the demo closed the terminal
                raise AssertionError("the demo exited early:\n" + self.text()[-2000:]) from None

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def test_on_a_terminal_the_prompt_and_what_is_typed_are_redrawn_under_every_message() -> None:
    term = Terminal()
    try:
        term.read_until(lambda: "Connectors:" in term.text(), within=30)
        assert "runs 60× faster than real time: a 10-minute job takes 10 seconds" in term.text()
        term.type(b"/jobs str")  # half typed, when alerts start to arrive
        typed_at = len(term.raw)

        def redrawn_after_an_alert() -> bool:
            after = term.text(typed_at)
            alert = after.rfind(ALERTS)
            return alert != -1 and "> /jobs str" in after[alert:]

        term.read_until(redrawn_after_an_alert, within=30)
        term.type(b"ipe-payments\r")  # the line as typed, across the alert, is what is sent
        term.read_until(lambda: REPLY in term.text(typed_at), within=30)
        reply = term.text(typed_at)[term.text(typed_at).index(REPLY) :]
        term.read_until(lambda: "Showing" in term.text(typed_at), within=30)
        assert "stripe-payments" in reply
        term.type(b"\x04")  # Ctrl-D
        deadline = time.monotonic() + 30
        while term.proc.poll() is None:  # keep draining while it shuts down
            term.read_until(lambda: True, within=0)
            ready, _, _ = select.select([term.master], [], [], max(deadline - time.monotonic(), 0))
            if ready:
                with contextlib.suppress(OSError):
                    term.raw += os.read(term.master, 65536)
            elif time.monotonic() > deadline:
                raise AssertionError("the demo did not end at Ctrl-D")
        assert term.proc.returncode == 0
        assert "Traceback" not in term.text()
    finally:
        term.close()
