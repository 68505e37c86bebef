"""`timbal-jobs-bot demo`, driven as a user drives it: a subprocess with a prompt."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

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
        proc.stdin.close()  # end of input ends the demo
        async with asyncio.timeout(30):
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
    assert "Traceback" not in output
    assert code == 0
