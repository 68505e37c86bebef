"""The composition root: start-up checks and what it does before the first request."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from bot.app.config import load_settings
from bot.app.runtime import Runtime, StartupError, running
from tests.fakes import FakeSlack, FakeTimbal, make_job
from tests.slack_requests import post, slash_command


async def test_auth_test_runs_at_start_not_on_the_first_command(
    bot_env: dict[str, str], redis_url: str, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    fake_timbal.jobs = [make_job("j1")]
    settings = load_settings(port=0, host="127.0.0.1", redis_url=redis_url)
    async with running(settings, poller=False, notifier=False) as rt:
        assert len(fake_slack.calls_to("auth.test")) == 1
        request = slash_command(
            text="",
            response_url=fake_slack.response_url("first"),
            signing_secret=bot_env["SLACK_SIGNING_SECRET"],
        )
        async with httpx.AsyncClient() as http:
            ack = await post(http, f"{rt.base_url}/slack/events", request)
        assert ack.status_code == 200
        await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) == 1)
    # The first command was authorised from the cached result: no auth.test on its path.
    assert len(fake_slack.calls_to("auth.test")) == 1


async def test_a_refused_bot_token_stops_start_up(
    bot_env: dict[str, str], redis_url: str, fake_slack: FakeSlack
) -> None:
    settings = load_settings(
        port=0, host="127.0.0.1", redis_url=redis_url, slack_bot_token="xoxb-revoked-token"
    )
    runtime = Runtime(settings, poller=False, notifier=False)
    try:
        with pytest.raises(StartupError) as info:
            await runtime.start()
    finally:
        await runtime.close()
    assert "SLACK_BOT_TOKEN" in str(info.value)
    assert "invalid_auth" in str(info.value)
    assert "xoxb-revoked-token" not in str(info.value)


async def test_an_unreachable_slack_at_start_is_not_fatal(
    bot_env: dict[str, str], redis_url: str, fake_slack: FakeSlack
) -> None:
    fake_slack.down = True  # 503 to everything
    settings = load_settings(port=0, host="127.0.0.1", redis_url=redis_url)
    async with running(settings, poller=False, notifier=False) as rt, httpx.AsyncClient() as http:
        assert (await http.get(f"{rt.base_url}/healthz")).status_code == 200


async def test_bolts_constructor_warning_is_muted_and_only_for_the_constructor(
    bot_env: dict[str, str], redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SLACK_BOT_TOKEN is in the environment (bot_env sets it): Bolt reads it itself and warns
    that it is unused next to our client. Muted while Bolt is built, through public logging
    API; Bolt's own logger is left as it was, so its later warnings still reach the log."""
    bolt = logging.getLogger("slack_bolt.AsyncApp")
    filters_before = list(bolt.filters)
    settings = load_settings(port=0, host="127.0.0.1", redis_url=redis_url)
    with caplog.at_level(logging.WARNING):
        runtime = Runtime(settings, poller=False, notifier=False)
        try:
            assert runtime.app is not None
            assert [r for r in caplog.records if r.name.startswith("slack_bolt")] == []
            assert bolt.filters == filters_before
            bolt.warning("a later Bolt warning")
            assert "a later Bolt warning" in caplog.text
            # Bolt's client carries no token: Bolt gets it per request from `authorize`.
            assert runtime.app.client.token is None
        finally:
            await runtime.close()


def test_no_private_attributes_of_dependencies_are_read() -> None:
    """Bolt's middleware list, aiohttp's site._server and Bolt's internal log messages were
    read; a minor release of either breaks such code silently."""
    root = Path(__file__).resolve().parent.parent
    sources = [*root.glob("bot/**/*.py"), *root.glob("handlers/**/*.py")]
    for private in ("_async_middleware_list", "._server", "slack_bolt.logger.messages"):
        users = [p.name for p in sources if private in p.read_text(encoding="utf-8")]
        assert users == [], f"{private} read in {users}"
