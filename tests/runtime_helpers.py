"""A running bot in-process (the real Runtime, HTTP mode), restartable against the same
Redis, with an injected clock; signed slash commands and card clicks sent to it as Slack
sends them, and the ephemeral answers read back at the fake Slack."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from bot.app.config import Settings, load_settings
from bot.app.runtime import Runtime
from tests.fakes import FakeSlack
from tests.slack_requests import block_action, post, slash_command

SIGNING_SECRET = "test-signing-secret"  # the bot_env fixture's


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Bot:
    """The running bot, restartable against the same Redis."""

    settings: Settings
    clock: Clock
    http: httpx.AsyncClient
    slack: FakeSlack
    runtime: Runtime | None = None
    _asked: int = 0

    async def start(self) -> None:
        self.runtime = Runtime(self.settings, clock=self.clock)
        await self.runtime.start()

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.close()
            self.runtime = None

    async def _answer(self, rid: str) -> dict[str, Any]:
        await self.slack.wait_for(
            lambda f: any(c.path.endswith(f"/{rid}") for c in f.calls_to("response_url"))
        )
        [answer] = [c for c in self.slack.calls_to("response_url") if c.path.endswith(f"/{rid}")]
        assert answer.body["response_type"] == "ephemeral"
        return answer.body

    def _rid(self) -> str:
        self._asked += 1
        return f"r{self._asked}"

    async def click(
        self,
        action_id: str,
        *,
        block_id: str,
        channel: str,
        value: str | None = None,
        selected: str | None = None,
        user: str = "U0ANA",
        name: str = "ana",
        forge: bool = False,
        stale: bool = False,
    ) -> tuple[int, str]:
        """A click on a card, as Slack posts it: (HTTP status of the ack, its response id)."""
        assert self.runtime is not None
        rid = self._rid()
        request = block_action(
            action_id=action_id,
            block_id=block_id,
            response_url=self.slack.response_url(rid),
            signing_secret=SIGNING_SECRET,
            channel_id=channel,
            value=value,
            selected=selected,
            user_id=user,
            user_name=name,
            forge=forge,
            stale=stale,
        )
        ack = await post(self.http, self.runtime.base_url + "/slack/events", request)
        return ack.status_code, rid

    async def answer(self, rid: str) -> dict[str, Any]:
        """The ephemeral answer to the request `rid`."""
        return await self._answer(rid)

    async def command(
        self, text: str, *, channel: str, user: str = "U0ANA", name: str = "ana"
    ) -> dict[str, Any]:
        """`/jobs text` from `channel`, as Slack sends it; the ephemeral reply."""
        assert self.runtime is not None
        rid = self._rid()
        request = slash_command(
            text=text,
            response_url=self.slack.response_url(rid),
            signing_secret=SIGNING_SECRET,
            user_id=user,
            user_name=name,
            channel_id=channel,
        )
        ack = await post(self.http, self.runtime.base_url + "/slack/events", request)
        assert ack.status_code == 200
        return await self._answer(rid)


@contextlib.asynccontextmanager
async def running_bot(slack: FakeSlack, redis_url: str, **overrides: Any) -> AsyncIterator[Bot]:
    """The bot of the end-to-end tests, up on `bot_env`'s fakes: polling every second, no
    pacing, no digests (a test may override any of it)."""
    settings = load_settings(
        **{
            "port": 0,
            "host": "127.0.0.1",
            "redis_url": redis_url,
            "poll_interval_seconds": 1.0,
            "channel_min_interval_seconds": 0.0,
            "digest_threshold": 1000,
        }
        | overrides
    )
    async with httpx.AsyncClient(timeout=30) as http:
        made = Bot(settings, Clock(datetime.now(UTC)), http, slack)
        await made.start()
        try:
            yield made
        finally:
            await made.stop()
