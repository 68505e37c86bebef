"""Kill the real bot process (SIGKILL) at random points of a scripted run; restart it each time.

Every transition must reach Slack exactly once: nothing lost (snapshot and outbox are one
atomic step; entries are acknowledged only after Slack said ok) and nothing twice (sent
records, and Slack message metadata checked after a crash between post and record).
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from storage.keys import Keys
from tests.fakes import FakeSlack, FakeTimbal
from tests.proc import clean_env
from tests.waiting import wait_until

CHANNEL = "C0ALERTS"
TERMINAL = ("failed", "succeeded", "cancelled", "exploded")  # "exploded": unknown -> finished
KIND = {"failed": "failed", "succeeded": "succeeded", "cancelled": "cancelled"}


def _event_ids(message: dict[str, Any]) -> list[str]:
    payload = (message.get("metadata") or {}).get("event_payload") or {}
    if "event_id" in payload:
        return [str(payload["event_id"])]
    return [str(e) for e in payload.get("event_ids", [])]


class Bot:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.kills = 0

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                "--no-commands",
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    async def kill(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            self.kills += 1
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def test_sigkill_at_random_points_posts_every_transition_once(
    bot_env: dict[str, str],
    redis_url: str,
    redis_client: aioredis.Redis,
    fake_timbal: FakeTimbal,
    fake_slack: FakeSlack,
    tmp_path: Path,
) -> None:
    rng = random.Random(20261129)
    env = clean_env(
        **bot_env,
        REDIS_URL=redis_url,
        POLL_INTERVAL_SECONDS="1",
        CHANNEL_MIN_INTERVAL_SECONDS="0",
        DIGEST_THRESHOLD="1000",
        PORT="0",
        HOST="127.0.0.1",
        LOG_LEVEL="INFO",
    )
    keys = Keys("tjb", fake_timbal.org_id)
    job_ids = [f"job{i:02d}" for i in range(16)]
    for i, job_id in enumerate(job_ids):
        fake_timbal.upsert(job_id, connector_id=f"conn-{i % 4}", state="queued")
    bot = Bot(env, tmp_path / "bot.log")

    def delivered() -> Counter[str]:
        return Counter(e for m in fake_slack.posted(CHANNEL) for e in _event_ids(m))

    await bot.start()
    expected: Counter[str] = Counter()
    clock = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
    try:

        async def baseline_recorded() -> bool:
            return bool(await redis_client.exists(keys.baseline))

        await wait_until(baseline_recorded, within=30, what="baseline")
        state = dict.fromkeys(job_ids, "queued")
        last_event: dict[str, str] = {}
        reruns = 0
        for _step in range(14):
            for job_id in rng.sample(job_ids, 5):
                clock += timedelta(seconds=1)
                current = state[job_id]
                if current == "queued":
                    state[job_id] = "running"
                    fake_timbal.upsert(job_id, state="running", started_at=clock.isoformat())
                elif current == "running":
                    final = rng.choice(TERMINAL)
                    state[job_id] = final
                    fake_timbal.upsert(job_id, state=final, finished_at=clock.isoformat())
                    kind = KIND.get(final, "finished")
                    last_event[job_id] = f"{fake_timbal.org_id}:{job_id}:{kind}:{clock.isoformat()}"
                    expected[last_event[job_id]] += 1
                elif reruns < 6 and last_event[job_id] in delivered():
                    # A re-run that ends again must alert again. Only once the bot has seen
                    # the previous end: a run that starts and ends unseen is not a transition.
                    reruns += 1
                    state[job_id] = "running"
                    fake_timbal.upsert(job_id, state="running", finished_at=None)
            # Let the bot run part of a cycle, then kill it somewhere in the middle of its work.
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            if rng.random() < 0.6:
                await bot.kill()
                await bot.start()
        for job_id in job_ids:  # finish everything still open
            if state[job_id] in ("queued", "running"):
                clock += timedelta(seconds=1)
                fake_timbal.upsert(job_id, state="failed", finished_at=clock.isoformat())
                expected[f"{fake_timbal.org_id}:{job_id}:failed:{clock.isoformat()}"] += 1
        await bot.kill()
        await bot.start()

        try:
            await wait_until(lambda: set(delivered()) >= set(expected), within=60)
            polls = len(fake_timbal.requests)
            await wait_until(lambda: len(fake_timbal.requests) >= polls + 3, within=30)
        except TimeoutError:
            pass  # the assertions below say what is missing, with the bot's log
    finally:
        await bot.stop()
    got = delivered()
    log_tail = (tmp_path / "bot.log").read_text()[-3000:]
    assert bot.kills >= 5, "the script should have killed the bot several times"
    assert reruns >= 2, "the script should have re-run jobs that had ended"
    assert len(expected) >= 16
    duplicates = {e: n for e, n in got.items() if n > 1}
    assert not duplicates, f"posted twice: {duplicates}\n{log_tail}"
    assert set(got) == set(expected), f"missing {set(expected) - set(got)}\n{log_tail}"
