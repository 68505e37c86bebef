"""Operators can see what could not be delivered, fix the cause, and replay it exactly once."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bot.alerts.render import MAX_THREAD_CHUNKS, render_alert
from storage.dead_letters import MAX_THREAD_REPLIES, DeadLetters, Letter
from storage.keys import Keys
from tests.fakes import FakeSlack, FakeTimbal
from tests.notifier_helpers import (
    CH,
    KEYS,
    T0,
    delivered,
    enqueue,
    event_ids,
    job_event,
    make_notifier,
    outbox_empty,
    running,
    to,
)
from tests.proc import clean_env, run_cli
from tests.waiting import wait_until


async def test_fix_the_channel_then_replay_delivers_once(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    fake_slack.known_channels = {"C0OTHER"}  # CH does not exist (yet): channel_not_found
    events = [job_event(1), job_event(2)]
    await enqueue(redis_client, *events)
    letters = DeadLetters(redis_client, KEYS)
    async with running(await make_notifier(redis_client, fake_slack)):
        await wait_until(lambda: outbox_empty(redis_client), what="dead-lettered")
        dead = await letters.read()
        assert [(d.event_id, d.channel, d.reason) for d in dead] == [
            (e.event_id, CH, "channel_not_found") for e in events
        ]
        assert delivered(fake_slack) == []
        fake_slack.known_channels = None  # the channel was created / the bot invited
        assert await letters.replay(dead) == 2
        assert await letters.read() == []
        await wait_until(lambda: len(delivered(fake_slack)) == 2, what="replayed")
        await wait_until(lambda: outbox_empty(redis_client), what="acked")
        assert await letters.replay(dead) == 2  # a second replay of the same letters ...
        await wait_until(lambda: outbox_empty(redis_client), what="acked again")
    assert delivered(fake_slack) == [e.event_id for e in events]  # ... posts nothing twice


async def test_a_replay_after_the_weekly_prune_posts_nothing_twice(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    fake_slack.known_channels = {"C0A"}  # the bot is not in C0B yet: channel_not_found
    event = job_event(1)
    await enqueue(redis_client, event)
    notifier = await make_notifier(redis_client, fake_slack, router=to("C0A", "C0B"))
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), what="sent to A, dead for B")
    assert delivered(fake_slack, "C0A") == [event.event_id]
    letters = DeadLetters(redis_client, KEYS)
    dead = await letters.read()
    assert [(d.channel, d.reason) for d in dead] == [("C0B", "channel_not_found")]
    # Eight days later the bot is invited to C0B; the prune has run meanwhile.
    eight_days_later = await notifier.records.now_ms() + 8 * 24 * 3600 * 1000
    await notifier.records.prune(
        now_ms=eight_days_later, max_age_ms=notifier.config.record_retention_ms
    )
    fake_slack.known_channels = None
    assert await letters.replay(dead) == 1
    async with running(notifier):
        await wait_until(lambda: len(delivered(fake_slack, "C0B")) == 1, what="replayed")
        await wait_until(lambda: outbox_empty(redis_client), what="acked")
    assert delivered(fake_slack, "C0A") == [event.event_id]  # A's record was kept: once
    assert delivered(fake_slack, "C0B") == [event.event_id]


@pytest.mark.parametrize("refusal", ["channel_not_found", "invalid_metadata_format"])
async def test_a_replayed_long_error_comes_back_with_its_whole_thread(
    redis_client: aioredis.Redis,
    fake_slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    refusal: str,
) -> None:
    event = job_event(1, message="\n".join(f"frame {i}: " + "x" * 60 for i in range(5000)))
    chunks = render_alert(event, now=T0).thread_chunks
    assert 5 <= len(chunks) <= MAX_THREAD_CHUNKS <= MAX_THREAD_REPLIES  # the replay's bound
    if refusal == "channel_not_found":
        fake_slack.known_channels = {"C0OTHER"}  # the bot is not in CH yet
        # A channel-wide refusal is remembered for a minute; once it is not (a restart, a
        # slow queue), the replies find their post dead and are skipped, with no letter.
        monkeypatch.setattr("bot.alerts.deliver.CHANNEL_REFUSAL_MEMORY", 0.0)
    else:
        fake_slack.fail("chat.postMessage", error=refusal)  # the post, once
    await enqueue(redis_client, event)
    letters = DeadLetters(redis_client, KEYS)
    async with running(await make_notifier(redis_client, fake_slack)):
        await wait_until(lambda: outbox_empty(redis_client), what="dead-lettered")
        dead = await letters.read()
        assert [(d.action_id, d.reason) for d in dead] == [(f"{event.event_id}|{CH}|post", refusal)]
        assert fake_slack.posted(CH) == []
        fake_slack.known_channels = None  # the bot was invited / the cause fixed
        assert await letters.replay(dead) == 1
        await wait_until(
            lambda: len(fake_slack.posted(CH)) == 1 + len(chunks), what="post and thread"
        )
        await wait_until(lambda: outbox_empty(redis_client), what="acked")
    main, *replies = fake_slack.posted(CH)
    assert main["thread_ts"] is None and event_ids(main) == [event.event_id]
    assert [r["text"] for r in replies] == chunks  # each once, in order, under the post
    assert all(r["thread_ts"] == main["ts"] for r in replies)


async def test_cli_lists_and_replays(
    bot_env: dict[str, str],
    redis_url: str,
    redis_client: aioredis.Redis,
    fake_timbal: FakeTimbal,
    fake_slack: FakeSlack,
) -> None:
    keys = Keys("tjb", fake_timbal.org_id)
    event = job_event(7, connector_id="pg\nforged line")
    await redis_client.xadd(
        keys.outbox, {"event_id": event.event_id, "event": event.model_dump_json()}
    )
    letter = Letter(
        entry_id="1-0",
        event_id=event.event_id,
        event=event.model_dump_json(),
        channel="C0ALERTS",
        action_id=f"{event.event_id}|C0ALERTS|post",
        reason="not_in_channel",
    )
    await DeadLetters(redis_client, keys).add([letter])
    env = clean_env(**{**bot_env, "REDIS_URL": redis_url})
    listed = await run_cli("dead-letters", env=env)
    assert listed.code == 0, listed.stderr
    assert "not_in_channel" in listed.stdout
    assert "1 dead letter(s)" in listed.stdout
    assert "forged line" not in listed.stdout.replace("\\n", " ").splitlines()[0]
    replayed = await run_cli("dead-letters", "--replay", env=env)
    assert "replayed 1 into the outbox" in replayed.stdout
    assert await redis_client.xlen(keys.dead_letter) == 0
    assert await redis_client.xlen(keys.outbox) == 2  # the original entry and the replay
