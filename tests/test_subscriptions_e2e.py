"""Channels subscribe, mention their on-call and mute, from Slack: signed `/jobs` commands to the
running bot, jobs driven on the fake Timbal, alerts read at the fake Slack. Real Redis; the
bot's clock is injected so a 30-minute mute can end without waiting for it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from bot.app.config import load_settings
from storage.keys import Keys
from tests.fakes import FakeSlack, FakeTimbal
from tests.runtime_helpers import Bot, Clock, running_bot
from tests.waiting import wait_until

SIGNING_SECRET = "test-signing-secret"  # the bot_env fixture's
PAY, DATA, QUIET = "C0PAY", "C0DATA", "C0QUIET"
PAY_ONCALL = "<!subteam^S0PAYONCALL|@payments-oncall>"


def shown(body: dict[str, Any]) -> str:
    return str(body.get("text", "")) + json.dumps(body.get("blocks"), ensure_ascii=False)


def alerts(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    """The bot's alerts in a channel (messages carrying its metadata), not its notes."""
    return [m for m in slack.posted(channel) if m.get("metadata") and not m["thread_ts"]]


def in_threads(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    """The bot's replies in a channel's threads (a further failure of an open incident)."""
    return [m for m in slack.posted(channel) if m.get("metadata") and m["thread_ts"]]


def notes(slack: FakeSlack, channel: str) -> list[str]:
    return [str(m["text"]) for m in slack.posted(channel) if not m.get("metadata")]


def events_in(message: dict[str, Any]) -> list[str]:
    return [str(e) for e in message["metadata"]["event_payload"]["events"]]


@pytest.fixture
async def bot(
    bot_env: dict[str, str], redis_url: str, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Bot]:
    monkeypatch.delenv("ALERT_CHANNEL")
    async with running_bot(fake_slack, redis_url) as made:
        yield made


async def test_two_channels_two_subscriptions_a_mute_and_its_summary_across_a_restart(
    bot: Bot, fake_timbal: FakeTimbal, fake_slack: FakeSlack, redis_client: aioredis.Redis
) -> None:
    keys = Keys("tjb", fake_timbal.org_id)
    for job_id, connector in (("s1", "stripe-charges"), ("p1", "pg-orders")):
        fake_timbal.upsert(job_id, connector_id=connector, state="running")

    async def baseline() -> bool:
        return bool(await redis_client.exists(keys.baseline))

    await wait_until(baseline, what="the first poll")

    answer = await bot.command(f"subscribe stripe-* mention={PAY_ONCALL}", channel=PAY)
    assert "this channel gets failures of `stripe-*`, mentioning @payments-oncall" in shown(answer)
    answer = await bot.command("subscribe all finished", channel=DATA, user="U0BEN", name="ben")
    assert "every finished run of every connector" in shown(answer)
    assert notes(fake_slack, PAY) == [
        "@ana subscribed this channel to failures of `stripe-*`, mentioning @payments-oncall."
    ]
    assert notes(fake_slack, DATA) == [
        "@ben subscribed this channel to every finished run of every connector."
    ]
    assert "S0PAYONCALL" not in json.dumps(fake_slack.posted())  # notes ping nobody

    await bot.stop()  # a restart changes nothing: the subscriptions are in Redis
    await bot.start()

    def finish(job_id: str, state: str, at: datetime, message: str | None = None) -> str:
        fake_timbal.upsert(job_id, state=state, finished_at=at.isoformat(), message=message)
        kind = {"failed": "failed", "succeeded": "succeeded"}[state]
        return f"{fake_timbal.org_id}:{job_id}:{kind}:{at.isoformat()}"

    t0 = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    failed = finish("s1", "failed", t0, "card declined")
    succeeded = finish("p1", "succeeded", t0 + timedelta(seconds=1))
    await fake_slack.wait_for(
        lambda f: len(alerts(f, DATA)) == 2 and len(alerts(f, PAY)) == 1, within=15
    )
    [pay] = alerts(fake_slack, PAY)
    assert events_in(pay) == [failed]
    assert pay["text"].startswith("<!subteam^S0PAYONCALL> ")  # on-call is pinged, here only
    assert [events_in(m) for m in alerts(fake_slack, DATA)] == [[failed], [succeeded]]
    assert all("S0PAYONCALL" not in shown(m) for m in alerts(fake_slack, DATA))

    # Mute stripe-* in #pay for 30 minutes; a failure meanwhile reaches #data only, where
    # stripe-charges' incident is open: its card is updated and the failure is in its thread.
    answer = await bot.command("mute stripe-* 30m", channel=PAY)
    assert "held back in this channel until" in shown(answer)
    fake_timbal.upsert("s1", state="running", finished_at=None, started_at=t0.isoformat())
    fake_timbal.upsert("p1", state="running", finished_at=None)
    await wait_until(lambda: len(fake_timbal.requests) >= 2, what="polls")  # seen running
    polls = len(fake_timbal.requests)
    await wait_until(lambda: len(fake_timbal.requests) >= polls + 2, what="the re-runs seen")
    muted = finish("s1", "failed", t0 + timedelta(minutes=5), "insufficient funds")
    await fake_slack.wait_for(lambda f: len(in_threads(f, DATA)) == 1, within=15)
    polls = len(fake_timbal.requests)
    await wait_until(lambda: len(fake_timbal.requests) >= polls + 2, what="more polls")
    assert len(alerts(fake_slack, PAY)) == 1 and not in_threads(fake_slack, PAY)  # nothing
    assert events_in(in_threads(fake_slack, DATA)[0]) == [muted]
    thread = in_threads(fake_slack, DATA)[0]["thread_ts"]
    [card] = [m for m in alerts(fake_slack, DATA) if m["ts"] == thread]  # the first failure's
    assert "Failed twice since" in shown(card)  # updated in place

    await bot.stop()  # a restart while muted changes nothing either
    await bot.start()

    bot.clock.now += timedelta(minutes=31)  # the mute ends: one summary
    await fake_slack.wait_for(lambda f: len(alerts(f, PAY)) == 2, within=15)
    summary = alerts(fake_slack, PAY)[-1]
    text = shown(summary)
    assert "The mute of `stripe-*` expired: 1 failure while muted" in text
    assert "insufficient funds" in text and "stripe-charges" in text
    assert "<!subteam" not in summary["text"]  # a summary pings nobody
    polls = len(fake_timbal.requests)
    await wait_until(lambda: len(fake_timbal.requests) >= polls + 3, what="more polls")
    assert len(alerts(fake_slack, PAY)) == 2  # exactly one summary, and nothing posted twice
    assert len(alerts(fake_slack, DATA)) == 2 and len(in_threads(fake_slack, DATA)) == 1

    listed = await bot.command("subscriptions all", channel=DATA)
    assert "failures of `stripe-*`" in shown(listed) and "every finished run" in shown(listed)
    assert ":mute:" not in shown(listed)  # the mute is gone


async def test_unmute_posts_the_summary_at_once(
    bot: Bot, fake_timbal: FakeTimbal, fake_slack: FakeSlack, redis_client: aioredis.Redis
) -> None:
    keys = Keys("tjb", fake_timbal.org_id)
    fake_timbal.upsert("p1", connector_id="pg-orders", state="running")

    async def baseline() -> bool:
        return bool(await redis_client.exists(keys.baseline))

    await wait_until(baseline, what="the first poll")
    await bot.command("subscribe pg-orders finished", channel=DATA)
    await bot.command("mute all 2h", channel=DATA)
    at = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    fake_timbal.upsert("p1", state="succeeded", finished_at=at.isoformat())

    async def counted() -> bool:
        return bool(await redis_client.hlen(keys.held))

    await wait_until(counted, what="the success held back")
    answer = await bot.command("unmute all", channel=DATA)
    assert "Unmuted every connector: 1 alert (0 failed) were held back" in shown(answer)
    await fake_slack.wait_for(lambda f: len(alerts(f, DATA)) == 1, within=15)
    assert "was lifted by @ana: 1 success while muted" in shown(alerts(fake_slack, DATA)[0])
    assert "@ana unmuted every connector here." in notes(fake_slack, DATA)


async def test_only_subscription_admins_may_change_and_everyone_may_read(
    bot_env: dict[str, str],
    redis_url: str,
    fake_slack: FakeSlack,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUBSCRIPTION_ADMINS", "U0BOSS,U0LEAD")
    settings = load_settings(port=0, host="127.0.0.1", redis_url=redis_url)
    async with httpx.AsyncClient(timeout=30) as http:
        bot = Bot(settings, Clock(datetime.now(UTC)), http, fake_slack)
        await bot.start()
        try:
            refused = await bot.command("subscribe all", channel=PAY, user="U0ANA")
            assert "Only <@U0BOSS>, <@U0LEAD> can change where alerts go" in shown(refused)
            refused = await bot.command("mute all 1h", channel=PAY, user="U0ANA")
            assert "Only <@U0BOSS>" in shown(refused)
            assert await redis_client.hlen(Keys("tjb", settings.timbal_org_id).subscriptions) == 0
            allowed = await bot.command("subscribe all", channel=PAY, user="U0BOSS")
            assert "Subscribed" in shown(allowed)
            listed = await bot.command("subscriptions", channel=PAY, user="U0ANA")
            assert "failures of every connector" in shown(listed)
            # ALERT_CHANNEL is a built-in subscription, shown to everyone
            everyone = await bot.command("subscriptions all", channel=PAY, user="U0ANA")
            assert "built in (`ALERT_CHANNEL`)" in shown(everyone)
        finally:
            await bot.stop()


@pytest.mark.parametrize(
    ("info", "said"),
    [
        ({"is_member": False}, "I am not in this channel"),
        ({"is_private": True, "is_member": False}, "I cannot see this channel"),
        ({"is_archived": True}, "This channel is archived"),
    ],
)
async def test_subscribing_a_channel_the_bot_cannot_post_in_says_how_to_fix_it(
    bot: Bot,
    fake_slack: FakeSlack,
    redis_client: aioredis.Redis,
    info: dict[str, Any],
    said: str,
) -> None:
    fake_slack.channel_info[QUIET] = info
    answer = await bot.command("subscribe all", channel=QUIET)
    assert said in shown(answer) and "Nothing was changed" in shown(answer)
    if "archived" not in said:
        assert "/invite @Timbal Jobs" in shown(answer)
    assert await redis_client.hlen(Keys("tjb", bot.settings.timbal_org_id).subscriptions) == 0
    assert fake_slack.posted(QUIET) == []  # no note either
    assert fake_slack.calls_to("conversations.info")


@pytest.mark.parametrize(
    "text",
    [
        "subscribe <!channel>",
        "subscribe " + "x" * 10_000,
        "subscribe pgé-ørders",
        "subscribe " + "*" * 500 + "a",
        "mute <!here> 1h",
    ],
)
async def test_hostile_subcommands_get_usage_and_change_nothing(
    bot: Bot, fake_slack: FakeSlack, redis_client: aioredis.Redis, text: str
) -> None:
    answer = await bot.command(text, channel=PAY)
    body = shown(answer)
    assert "Usage" in body or "`/jobs" in body
    assert "<!channel>" not in body and "<!here>" not in body
    keys = Keys("tjb", bot.settings.timbal_org_id)
    assert (
        await redis_client.hlen(keys.subscriptions) == 0
        and await redis_client.hlen(keys.mutes) == 0
    )
    assert fake_slack.posted(PAY) == []
