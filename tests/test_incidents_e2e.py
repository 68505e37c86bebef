"""Incidents end to end: the running bot (real Runtime, real Redis) polls the fake Timbal and
posts to the fake Slack; card clicks are signed interactivity payloads, as Slack sends them.

One card per connector and channel: fail, fail, fail, succeed -> one card updated each time,
two replies in its thread and a recovery reply. Acknowledge (first wins, races included),
Mute connector, Recent runs; forged or stale clicks refused. Escalation once after the
deadline (the bot's clock is injected), never after an acknowledgement. Threads off; a card
deleted in Slack is posted anew. Ops alerts when Timbal keeps failing, and its recovery.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.alerts.cards import ACK, MUTE, RUNS
from storage.keys import Keys
from tests.fakes import FakeSlack, FakeTimbal
from tests.runtime_helpers import Bot, running_bot
from tests.waiting import wait_until

CH = "C0ALERTS"  # the bot_env fixture's ALERT_CHANNEL
ONCALL = "S0ONCALL1"
T0 = datetime(2026, 12, 1, 14, 2, tzinfo=UTC)


def shown(message: dict[str, Any]) -> str:
    return str(message.get("text", "")) + json.dumps(message.get("blocks"), ensure_ascii=False)


def cards(slack: FakeSlack, channel: str = CH) -> list[dict[str, Any]]:
    """The bot's top-level messages in the channel (cards and alerts), not its notes."""
    return [m for m in slack.posted(channel) if m.get("metadata") and not m["thread_ts"]]


def thread(slack: FakeSlack, ts: str, channel: str = CH) -> list[dict[str, Any]]:
    return [m for m in slack.posted(channel) if m["thread_ts"] == ts]


def updates(slack: FakeSlack, ts: str) -> list[dict[str, Any]]:
    return [u for u in slack.updates if u["ts"] == ts]


def current(slack: FakeSlack, ts: str) -> dict[str, Any]:
    [message] = [m for m in slack.messages if m["ts"] == ts]
    return message


def block_id(message: dict[str, Any]) -> str:
    [actions] = [b for b in message["blocks"] or [] if b["type"] == "actions"]
    return str(actions["block_id"])


def action_ids(message: dict[str, Any]) -> set[str]:
    return {
        str(e["action_id"])
        for b in message["blocks"] or []
        if b["type"] == "actions"
        for e in b["elements"]
    }


@pytest.fixture
async def bot(
    bot_env: dict[str, str], redis_url: str, fake_slack: FakeSlack, request: pytest.FixtureRequest
) -> AsyncIterator[Bot]:
    extra: dict[str, Any] = getattr(request, "param", {})
    async with running_bot(fake_slack, redis_url, oncall_mention=ONCALL, **extra) as made:
        yield made


async def _baseline(fake_timbal: FakeTimbal, redis_client: aioredis.Redis) -> None:
    keys = Keys("tjb", fake_timbal.org_id)

    async def done() -> bool:
        return bool(await redis_client.exists(keys.baseline))

    await wait_until(done, what="the first poll")


def fail(
    fake_timbal: FakeTimbal,
    run: str,
    at: datetime,
    message: str = "permission denied for table orders",
    connector: str = "pg-orders",
) -> None:
    """A run of `connector` (a platform retry of the same sync) that failed at `at`."""
    fake_timbal.upsert(
        run,
        connector_id=connector,
        sync_id=f"sync-{connector}",
        state="failed",
        started_at=(at - timedelta(minutes=1)).isoformat(),
        finished_at=at.isoformat(),
        message=message,
    )


async def first_card(bot: Bot, fake_timbal: FakeTimbal, connector: str = "pg-orders") -> str:
    """A first failure of `connector`: its card's ts."""
    fail(fake_timbal, f"{connector}-r1", T0, connector=connector)
    await bot.slack.wait_for(lambda f: any(connector in shown(m) for m in cards(f)), within=15)
    [card] = [m for m in cards(bot.slack) if connector in shown(m)]
    return str(card["ts"])


async def test_fail_fail_fail_succeed_is_one_card_two_replies_and_a_recovery(
    bot: Bot, fake_timbal: FakeTimbal, fake_slack: FakeSlack, redis_client: aioredis.Redis
) -> None:
    await _baseline(fake_timbal, redis_client)
    ts = await first_card(bot, fake_timbal)
    card = current(fake_slack, ts)
    assert card["text"].startswith(f"<!subteam^{ONCALL}> ")  # on-call is pinged, once
    assert {ACK, MUTE, RUNS} <= action_ids(card)
    assert "Failed once since" in shown(card)

    fail(fake_timbal, "pg-orders-r2", T0 + timedelta(minutes=5))
    await fake_slack.wait_for(lambda f: len(thread(f, ts)) == 1 and len(updates(f, ts)) == 1)
    assert "Failed twice since" in shown(current(fake_slack, ts))
    fail(fake_timbal, "pg-orders-r3", T0 + timedelta(minutes=10), message="connection reset")
    await fake_slack.wait_for(lambda f: len(thread(f, ts)) == 2 and len(updates(f, ts)) == 2)
    assert "Failed 3 times since" in shown(current(fake_slack, ts))
    assert "last: connection reset" in shown(current(fake_slack, ts))

    fake_timbal.upsert(
        "pg-orders-r4",
        connector_id="pg-orders",
        sync_id="sync-pg-orders",
        state="succeeded",
        started_at=(T0 + timedelta(minutes=41)).isoformat(),
        finished_at=(T0 + timedelta(minutes=42)).isoformat(),
        rows_emitted=1200,
    )
    await fake_slack.wait_for(lambda f: len(thread(f, ts)) == 3 and len(updates(f, ts)) == 3)
    polls = len(fake_timbal.requests)
    await wait_until(lambda: len(fake_timbal.requests) >= polls + 2, what="more polls")

    assert len(cards(fake_slack)) == 1  # one card per incident: the success replaced
    again, again2, recovered = (shown(m) for m in thread(fake_slack, ts))
    assert "failed again" in again and "failed again" in again2
    assert "connection reset" in again2
    assert "Recovered after 3 failures over 42m" in recovered
    assert all(ONCALL not in shown(m) for m in thread(fake_slack, ts))  # no mention
    final = current(fake_slack, ts)
    assert "Recovered" in shown(final) and not action_ids(final)  # resolved: no buttons
    assert len(fake_slack.calls_to("chat.postMessage", CH)) == 4  # the card and 3 replies


async def test_acknowledge_first_wins_and_the_second_person_is_told(
    bot: Bot, fake_timbal: FakeTimbal, fake_slack: FakeSlack, redis_client: aioredis.Redis
) -> None:
    await _baseline(fake_timbal, redis_client)
    ts = await first_card(bot, fake_timbal)
    block = block_id(current(fake_slack, ts))

    status, rid = await bot.click(ACK, block_id=block, channel=CH, user="U0ANA", name="ana")
    assert status == 200
    assert "You acknowledged the incident of `pg-orders`" in shown(await bot.answer(rid))
    await fake_slack.wait_for(lambda f: len(updates(f, ts)) == 1)
    card = current(fake_slack, ts)
    assert "Acknowledged by @ana" in shown(card) and ACK not in action_ids(card)
    assert {MUTE, RUNS} <= action_ids(card)

    _, rid = await bot.click(ACK, block_id=block, channel=CH, user="U0ANA", name="ana")
    assert "You acknowledged the incident of `pg-orders` already" in shown(await bot.answer(rid))
    _, rid = await bot.click(ACK, block_id=block, channel=CH, user="U0BEN", name="ben")
    said = shown(await bot.answer(rid))
    assert "@ana acknowledged the incident of `pg-orders` first" in said
    await asyncio.sleep(1.5)
    assert len(updates(fake_slack, ts)) == 1  # one acknowledgement, one card update


async def test_two_people_acknowledging_at_once_record_one_acknowledger(
    bot: Bot, fake_timbal: FakeTimbal, fake_slack: FakeSlack, redis_client: aioredis.Redis
) -> None:
    await _baseline(fake_timbal, redis_client)
    ts = await first_card(bot, fake_timbal)
    block = block_id(current(fake_slack, ts))
    clicks = await asyncio.gather(
        *(
            bot.click(ACK, block_id=block, channel=CH, user=f"U0P{i}", name=f"p{i}")
            for i in range(6)
        )
    )
    said = [shown(await bot.answer(rid)) for status, rid in clicks if status == 200]
    assert len(said) == 6
    winners = [s for s in said if "You acknowledged" in s]
    assert len(winners) == 1
    assert all(" first, at " in s for s in said if s not in winners)
    await fake_slack.wait_for(lambda f: len(updates(f, ts)) == 1)
    await asyncio.sleep(1.0)
    assert len(updates(fake_slack, ts)) == 1


async def test_mute_from_the_card_and_recent_runs(
    bot: Bot, fake_timbal: FakeTimbal, fake_slack: FakeSlack, redis_client: aioredis.Redis
) -> None:
    await _baseline(fake_timbal, redis_client)
    ts = await first_card(bot, fake_timbal)
    block = block_id(current(fake_slack, ts))

    _, rid = await bot.click(RUNS, block_id=block, channel=CH)
    runs = shown(await bot.answer(rid))
    assert "pg-orders-r1" in runs and "permission denied" in runs

    _, rid = await bot.click(MUTE, block_id=block, channel=CH, selected="14400", name="ben")
    assert "Muted: alerts of `pg-orders` are held back in this channel until" in shown(
        await bot.answer(rid)
    )
    await fake_slack.wait_for(lambda f: len(updates(f, ts)) == 1)
    assert ":mute: Muted here until" in shown(current(fake_slack, ts))
    assert "by @ben" in shown(current(fake_slack, ts))
    listed = shown(await bot.command("subscriptions", channel=CH))
    assert ":mute:" in listed and "pg-orders" in listed
    # The mute holds: a further failure changes nothing in the channel.
    fail(fake_timbal, "pg-orders-r2", T0 + timedelta(minutes=5))
    polls = len(fake_timbal.requests)
    await wait_until(lambda: len(fake_timbal.requests) >= polls + 3, what="polls")
    assert not thread(fake_slack, ts) and len(updates(fake_slack, ts)) == 1

    _, rid = await bot.click(MUTE, block_id=block, channel=CH, selected="99")
    assert "not one of the card's mute durations" in shown(await bot.answer(rid))


@pytest.mark.parametrize("how", ["forged", "stale"])
async def test_a_forged_or_stale_click_is_refused_before_any_handler(
    bot: Bot,
    fake_timbal: FakeTimbal,
    fake_slack: FakeSlack,
    redis_client: aioredis.Redis,
    how: str,
) -> None:
    await _baseline(fake_timbal, redis_client)
    ts = await first_card(bot, fake_timbal)
    block = block_id(current(fake_slack, ts))
    status, _ = await bot.click(
        ACK, block_id=block, channel=CH, forge=how == "forged", stale=how == "stale"
    )
    assert status == 401
    await asyncio.sleep(1.0)
    assert not fake_slack.calls_to("response_url")  # no answer to the URL it carried
    assert not updates(fake_slack, ts)  # nothing acknowledged
    keys = Keys("tjb", fake_timbal.org_id)
    fields = await redis_client.hkeys(keys.incidents)
    assert not [f for f in fields if str(f).startswith("ack:")]


@pytest.mark.parametrize("bot", [{"escalate_after_seconds": 900}], indirect=True)
async def test_escalation_reminds_once_after_the_deadline_never_after_an_ack(
    bot: Bot, fake_timbal: FakeTimbal, fake_slack: FakeSlack, redis_client: aioredis.Redis
) -> None:
    await _baseline(fake_timbal, redis_client)
    ts = await first_card(bot, fake_timbal)
    acked = await first_card(bot, fake_timbal, connector="stripe-charges")
    _, rid = await bot.click(ACK, block_id=block_id(current(fake_slack, acked)), channel=CH)
    await bot.answer(rid)
    bot.clock.now += timedelta(seconds=899)
    await asyncio.sleep(2.0)
    assert not thread(fake_slack, ts)  # not yet
    bot.clock.now += timedelta(seconds=2)
    await fake_slack.wait_for(lambda f: len(thread(f, ts)) == 1, within=10)
    [reminder] = thread(fake_slack, ts)
    assert reminder["text"].startswith(f"<!subteam^{ONCALL}>")
    assert "not acknowledged after 15m" in shown(reminder)
    bot.clock.now += timedelta(hours=5)
    await asyncio.sleep(3.0)
    assert len(thread(fake_slack, ts)) == 1  # once
    assert not thread(fake_slack, acked)  # never after an acknowledgement


async def test_threads_off_posts_every_failure_top_level(
    bot: Bot, fake_timbal: FakeTimbal, fake_slack: FakeSlack, redis_client: aioredis.Redis
) -> None:
    await _baseline(fake_timbal, redis_client)
    said = shown(await bot.command("settings threads off", channel=CH))
    assert "threads are off" in said
    assert "threads are off" in shown(await bot.command("settings", channel=CH))
    ts = await first_card(bot, fake_timbal)
    fail(fake_timbal, "pg-orders-r2", T0 + timedelta(minutes=5))
    await fake_slack.wait_for(lambda f: len(cards(f)) == 2 and len(updates(f, ts)) == 1)
    assert not thread(fake_slack, ts)
    second = cards(fake_slack)[1]
    assert second["text"].startswith(f"<!subteam^{ONCALL}>")  # a plain alert, pinging
    assert "Failed twice since" in shown(current(fake_slack, ts))  # the card still follows


async def test_a_card_deleted_in_slack_is_posted_anew_and_the_thread_follows(
    bot: Bot, fake_timbal: FakeTimbal, fake_slack: FakeSlack, redis_client: aioredis.Redis
) -> None:
    await _baseline(fake_timbal, redis_client)
    ts = await first_card(bot, fake_timbal)
    fake_slack.delete_message(CH, ts)
    fail(fake_timbal, "pg-orders-r2", T0 + timedelta(minutes=5))
    await fake_slack.wait_for(lambda f: len(cards(f)) == 1 and bool(thread(f, cards(f)[0]["ts"])))
    [card] = cards(fake_slack)
    assert card["ts"] != ts and "Failed twice since" in shown(card)
    assert ACK in action_ids(card)
    fail(fake_timbal, "pg-orders-r3", T0 + timedelta(minutes=10))
    await fake_slack.wait_for(lambda f: len(thread(f, card["ts"])) == 2)
    assert len(cards(fake_slack)) == 1 and len(updates(fake_slack, card["ts"])) == 1


@pytest.mark.parametrize("bot", [{"ops_alert_after_polls": 2}], indirect=True)
async def test_ops_alert_when_timbal_keeps_failing_and_when_it_recovers(
    bot: Bot, fake_timbal: FakeTimbal, fake_slack: FakeSlack, redis_client: aioredis.Redis
) -> None:
    await _baseline(fake_timbal, redis_client)
    fake_timbal.inject(status=503, body="upstream down", times=10**6)

    def ops(f: FakeSlack, words: str) -> list[dict[str, Any]]:
        return [m for m in f.posted(CH) if words in str(m["text"])]

    await fake_slack.wait_for(lambda f: bool(ops(f, "Timbal is failing")), within=30)
    [raised] = ops(fake_slack, "Timbal is failing")
    assert "2 polls in a row failed" in shown(raised)
    fake_timbal.injected.clear()
    await fake_slack.wait_for(lambda f: bool(ops(f, "Timbal answers again")), within=30)
    polls = len(fake_timbal.requests)
    await wait_until(lambda: len(fake_timbal.requests) >= polls + 2, what="more polls")
    assert len(ops(fake_slack, "Timbal is failing")) == 1  # once
    assert len(ops(fake_slack, "Timbal answers again")) == 1
    status = shown(await bot.command("status", channel=CH))
    assert "Last successful poll" in status and "Open incidents" in status


@pytest.mark.parametrize(
    "bot",
    [{"stall_after_seconds": 900, "long_running_after_seconds": 0, "escalate_after_seconds": 300}],
    indirect=True,
)
async def test_a_stalled_run_opens_a_card_progress_threads_into_it_and_success_recovers(
    bot: Bot, fake_timbal: FakeTimbal, fake_slack: FakeSlack, redis_client: aioredis.Redis
) -> None:
    started = bot.clock.now - timedelta(minutes=1)
    fake_timbal.upsert(
        "pg-orders-r1",
        connector_id="pg-orders",
        state="running",
        started_at=started.isoformat(),
        updated_at=bot.clock.now.isoformat(),
        rows_emitted=40,
    )
    await _baseline(fake_timbal, redis_client)
    polls = len(fake_timbal.requests)
    await wait_until(lambda: len(fake_timbal.requests) >= polls + 2, what="polls of a live run")
    assert not cards(fake_slack)  # moving recently: not hung

    last_move = bot.clock.now
    bot.clock.now += timedelta(minutes=16)  # no progress for 16 minutes
    await fake_slack.wait_for(lambda f: len(cards(f)) == 1, within=15)
    [card] = cards(fake_slack)
    ts = str(card["ts"])
    assert card["text"].startswith(f"<!subteam^{ONCALL}> ")  # a hang pages like a failure
    assert "pg-orders" in shown(card) and "stalled" in shown(card)
    assert {ACK, MUTE, RUNS} <= action_ids(card)
    polls = len(fake_timbal.requests)
    await wait_until(lambda: len(fake_timbal.requests) >= polls + 2, what="more polls")
    assert len(cards(fake_slack)) == 1 and not thread(fake_slack, ts)  # once per run
    status = shown(await bot.command("status", channel=CH))
    assert "*1* jobs tracked" in status  # the snapshots, counted where they are stored
    assert "`pg-orders` in <#C0ALERTS>" in status  # the stall's incident is open

    fake_timbal.upsert("pg-orders-r1", updated_at=bot.clock.now.isoformat(), rows_emitted=900)
    await fake_slack.wait_for(lambda f: len(thread(f, ts)) == 1, within=15)
    [moving] = thread(fake_slack, ts)
    assert "progressing again" in shown(moving)
    assert ONCALL not in shown(moving)
    await fake_slack.wait_for(lambda f: "Progressing again since" in shown(current(f, ts)))
    # Past the escalation deadline (5 minutes) while it moves: nobody is reminded of a hang
    # that is over.
    bot.clock.now += timedelta(minutes=6)
    fake_timbal.upsert("pg-orders-r1", updated_at=bot.clock.now.isoformat(), rows_emitted=1000)
    polls = len(fake_timbal.requests)
    await wait_until(lambda: len(fake_timbal.requests) >= polls + 3, what="polls past the deadline")
    assert len(thread(fake_slack, ts)) == 1

    fake_timbal.upsert(
        "pg-orders-r1",
        state="succeeded",
        finished_at=bot.clock.now.isoformat(),
        rows_emitted=1500,
    )
    await fake_slack.wait_for(lambda f: len(thread(f, ts)) == 2, within=15)
    recovered = shown(thread(fake_slack, ts)[1])
    assert "Recovered after a stall over 22m" in recovered  # from its last progress
    assert "recovered after a stall" in current(fake_slack, ts)["text"]
    assert len(cards(fake_slack)) == 1  # the success went into the card, not the channel
    # The stall's id: the poll that last saw the run move, to the second, by the bot's clock.
    since = last_move.replace(microsecond=0).isoformat()
    assert f"pg-orders-r1:stalled:{since}" in json.dumps(card.get("metadata"))


OPS = "C0OPS"


@pytest.mark.parametrize("bot", [{"ops_channel": OPS, "ops_slack_pause_seconds": 2}], indirect=True)
async def test_ops_alert_when_slack_holds_alerts_back_and_when_it_delivers_again(
    bot: Bot, fake_timbal: FakeTimbal, fake_slack: FakeSlack, redis_client: aioredis.Redis
) -> None:
    await _baseline(fake_timbal, redis_client)
    # Slack rate-limits the alert channel, over and over: its alerts wait, the ops channel not.
    fake_slack.fail("chat.postMessage", status=429, retry_after=1, channel=CH, times=10**6)
    fail(fake_timbal, "pg-orders-r1", T0)

    def ops(words: str) -> list[dict[str, Any]]:
        return [m for m in fake_slack.posted(OPS) if words in str(m["text"])]

    await fake_slack.wait_for(lambda f: bool(ops("Slack delivery is paused")), within=30)
    [raised] = ops("Slack delivery is paused")
    assert "nothing delivered for" in shown(raised) and "rate limited" in shown(raised)
    assert not cards(fake_slack)  # the alert is still waiting

    fake_slack.failures.clear()  # Slack lets the channel through again
    await fake_slack.wait_for(lambda f: len(cards(f)) == 1, within=30)  # the alert, once
    await fake_slack.wait_for(lambda f: bool(ops("Slack delivery resumed")), within=30)
    await asyncio.sleep(2.5)  # another pause window: nothing more is said
    assert len(ops("Slack delivery is paused")) == 1
    assert len(ops("Slack delivery resumed")) == 1
    assert len(cards(fake_slack)) == 1
