"""The notifier when Slack pushes back: outages, 429s, refused channels and blocks, pacing,
storms and long errors. Real Redis, FakeSlack over real HTTP, timings from the constructor."""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis

import bot.alerts.send
from bot.alerts.render import render_alert, render_plain
from bot.app.metrics import Metrics
from bot.blockkit import MAX_SECTION_TEXT
from bot.domain.events import EventKind
from bot.sim.slack_api import block_errors
from tests.fakes import FakeSlack
from tests.notifier_helpers import (
    CH,
    T0,
    counter,
    dead_letters,
    delivered,
    enqueue,
    event_ids,
    job_event,
    make_notifier,
    outbox_empty,
    routes,
    running,
)
from tests.waiting import wait_until


async def test_slack_down_then_back_delivers_everything_once_in_order(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    metrics = Metrics()
    events = [job_event(i, EventKind.SUCCEEDED if i % 2 else EventKind.FAILED) for i in range(6)]
    fake_slack.down = True
    await enqueue(redis_client, *events)
    notifier = make_notifier(redis_client, fake_slack, metrics=metrics)
    async with running(notifier):
        await fake_slack.wait_for(lambda f: len(f.calls) >= 4, within=10)  # retried, backing off
        assert fake_slack.posted() == []
        fake_slack.down = False
        await wait_until(lambda: outbox_empty(redis_client), within=15, what="all delivered")
    assert delivered(fake_slack) == [e.event_id for e in events]  # each once, in order
    assert counter(metrics, "tjb_messages_total", outcome="retried") >= 2
    assert counter(metrics, "tjb_messages_total", outcome="sent") == 6
    # After a 503 nobody knows whether Slack posted: the history was checked first.
    assert fake_slack.calls_to("conversations.history", CH)


async def test_a_5xx_keeps_order_within_the_channel(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    events = [job_event(i) for i in range(3)]
    await enqueue(redis_client, *events)
    fake_slack.fail("chat.postMessage", status=500, error="internal_error", channel=CH)
    async with running(make_notifier(redis_client, fake_slack)):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="delivered")
    assert delivered(fake_slack) == [e.event_id for e in events]
    posts = [e for c in fake_slack.calls_to("chat.postMessage") for e in event_ids(c.body)]
    assert posts == [events[0].event_id, *(e.event_id for e in events)]  # the first, again


async def test_429_pauses_only_that_channel_for_retry_after(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    metrics = Metrics()
    events = [job_event(i) for i in range(3)]
    await enqueue(redis_client, *events)
    fake_slack.fail("chat.postMessage", status=429, retry_after=2, channel="A")
    notifier = make_notifier(
        redis_client, fake_slack, metrics=metrics, router=lambda e, /: ["A", "B"]
    )
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=15, what="delivered")
    to_a = fake_slack.calls_to("chat.postMessage", "A")
    to_b = fake_slack.calls_to("chat.postMessage", "B")
    assert len(to_a) == 4 and len(to_b) == 3  # the refused post to A came again
    assert to_a[1].at - to_a[0].at >= 2.0  # no request to A before Retry-After passed
    assert to_b[-1].at < to_a[1].at  # B kept flowing meanwhile
    assert delivered(fake_slack, "A") == delivered(fake_slack, "B") == [e.event_id for e in events]
    assert counter(metrics, "tjb_slack_ratelimited_total") == 1
    # A 429 means "not posted": no history check was needed before posting again.
    assert fake_slack.calls_to("conversations.history") == []


async def test_channel_not_found_dead_letters_and_does_not_block(
    redis_client: aioredis.Redis, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    fake_slack.known_channels = {CH}
    gone = [job_event(i, connector_id="old") for i in (1, 3)]
    both = job_event(4, connector_id="both")
    fine = job_event(2)
    await enqueue(redis_client, gone[0], fine, gone[1], both)
    router = routes({"old": ["C0GONE"], "both": ["C0GONE", CH]})
    notifier = make_notifier(redis_client, fake_slack, metrics=metrics, router=router)
    with caplog.at_level(logging.ERROR):
        async with running(notifier):
            await wait_until(lambda: outbox_empty(redis_client), within=10, what="finished")
    assert delivered(fake_slack) == [fine.event_id, both.event_id]
    dead = await dead_letters(redis_client)
    assert {(d["event_id"], d["channel"], d["reason"]) for d in dead} == {
        (e.event_id, "C0GONE", "channel_not_found") for e in [*gone, both]
    }
    assert len(fake_slack.calls_to("chat.postMessage", "C0GONE")) == 1  # the rest followed it
    assert counter(metrics, "tjb_messages_total", outcome="dead_lettered") == 3
    assert "channel_not_found" in caplog.text and "invite the bot" in caplog.text


async def test_revoked_token_dead_letters_with_a_clear_line(
    redis_client: aioredis.Redis, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    await enqueue(redis_client, job_event(1))
    fake_slack.fail("chat.postMessage", error="token_revoked")
    with caplog.at_level(logging.ERROR):
        result = await make_notifier(redis_client, fake_slack).run_once()
    assert result.dead_lettered == 1 and result.acked == 1
    assert "token_revoked" in caplog.text and "SLACK_BOT_TOKEN" in caplog.text
    assert [d["reason"] for d in await dead_letters(redis_client)] == ["token_revoked"]


async def test_invalid_blocks_get_one_plain_text_retry(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    metrics = Metrics()
    e = job_event(1, message="bad <!here> & stuff")
    await enqueue(redis_client, e)
    fake_slack.fail("chat.postMessage", error="invalid_blocks")
    result = await make_notifier(redis_client, fake_slack, metrics=metrics).run_once()
    assert (result.sent, result.plain_text_fallback, result.acked) == (1, 1, 1)
    first, second = fake_slack.calls_to("chat.postMessage")
    assert "blocks" in first.body and "blocks" not in second.body
    [message] = fake_slack.posted(CH)
    assert message["text"] == render_plain(render_alert(e, now=T0))
    assert "&lt;!here&gt; &amp; stuff" in message["text"]
    assert event_ids(message) == [e.event_id]  # still findable after a crash
    assert counter(metrics, "tjb_messages_total", outcome="plain_text_fallback") == 1


async def test_refused_twice_is_dead_lettered_after_exactly_two_calls(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    await enqueue(redis_client, job_event(1), job_event(2))
    fake_slack.fail("chat.postMessage", error="msg_too_long", times=2)
    result = await make_notifier(redis_client, fake_slack).run_once()
    assert result.dead_lettered == 1 and result.sent == 1 and result.acked == 2
    assert len(fake_slack.calls_to("chat.postMessage")) == 3
    assert [d["reason"] for d in await dead_letters(redis_client)] == ["msg_too_long"]
    assert delivered(fake_slack) == [job_event(2).event_id]


async def test_posts_to_one_channel_are_paced(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    metrics = Metrics()
    fake_slack.min_channel_interval = 0.9  # the fake answers 429 to anything faster
    events = [job_event(i) for i in range(3)]
    await enqueue(redis_client, *events)
    notifier = make_notifier(redis_client, fake_slack, metrics=metrics, channel_min_interval=1.0)
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=15, what="delivered")
    calls = fake_slack.calls_to("chat.postMessage", CH)
    assert len(calls) == 3
    # The gate is taken just before each request leaves: gaps are the interval, less at most
    # one request's latency.
    assert all(b.at - a.at >= 0.95 for a, b in itertools.pairwise(calls))
    assert counter(metrics, "tjb_slack_ratelimited_total") == 0


async def test_a_storm_of_300_failures_becomes_a_handful_of_digests(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    nasty = "<!channel> & `x` <https://evil|y> " * 200
    events = [job_event(i, connector_id=f"conn-{i % 9}", message=nasty) for i in range(300)]
    await enqueue(redis_client, *events)
    notifier = make_notifier(redis_client, fake_slack, digest_threshold=5, batch_size=100)
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=20, what="all acked")
    posted = fake_slack.posted(CH)
    assert 1 < len(posted) <= 10
    assert all(not block_errors(m["blocks"]) for m in posted)  # FakeSlack accepted them all
    assert Counter(delivered(fake_slack)) == Counter(e.event_id for e in events)
    assert all(1 < len(event_ids(m)) <= 50 for m in posted)  # digests, each of a bounded size
    assert all(
        m["text"].startswith(f":rotating_light: {len(event_ids(m))} job alerts") for m in posted
    )
    assert "<!channel>" not in str(posted)


async def test_a_few_events_are_not_a_digest(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    await enqueue(redis_client, *(job_event(i) for i in range(5)))
    result = await make_notifier(redis_client, fake_slack, digest_threshold=5).run_once()
    assert (result.sent, result.digests) == (5, 0)
    await enqueue(redis_client, *(job_event(i) for i in range(10, 16)))
    result = await make_notifier(redis_client, fake_slack, digest_threshold=5).run_once()
    assert (result.sent, result.digests) == (1, 1)


async def test_a_long_error_is_threaded_after_the_main_post(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    text = "HEAD\n" + "\n".join(f"frame {i}" for i in range(1500)) + "\nTAIL"
    e = job_event(1, message=text)
    await enqueue(redis_client, e)
    chunks = render_alert(e, now=T0).thread_chunks
    assert len(chunks) >= 2
    notifier = make_notifier(redis_client, fake_slack, channel_min_interval=0.2)
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=15, what="acked")
    main, *replies = fake_slack.posted(CH)
    assert main["thread_ts"] is None and event_ids(main) == [e.event_id]
    assert [r["text"] for r in replies] == chunks
    assert all(r["thread_ts"] == main["ts"] for r in replies)
    assert all(len(r["text"]) <= MAX_SECTION_TEXT for r in replies)
    calls = fake_slack.calls_to("chat.postMessage", CH)
    assert all(b.at - a.at >= 0.15 for a, b in itertools.pairwise(calls))  # paced


async def test_a_failed_thread_reply_never_reposts_the_main_message(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    e = job_event(1, message="x" * 10_000)
    await enqueue(redis_client, e)
    notifier = make_notifier(redis_client, fake_slack, channel_min_interval=0.3)
    assert (await notifier.run_once()).sent == 1  # the main post; the gate holds the replies
    fake_slack.fail("chat.postMessage", error="cannot_reply_to_message", times=99)
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="acked")
    assert delivered(fake_slack) == [e.event_id]
    assert len(fake_slack.calls_to("chat.postMessage")) == 2  # main + one failed reply


async def test_a_rendering_bug_does_not_hold_the_channel(
    redis_client: aioredis.Redis, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in rendering")

    monkeypatch.setattr("bot.alerts.deliver.render_alert", broken)
    events = [job_event(1, connector_id="<!channel> pg")]
    await enqueue(redis_client, *events)
    notifier = make_notifier(redis_client, fake_slack)
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="delivered")
    assert delivered(fake_slack) == [events[0].event_id]
    text = fake_slack.posted(CH)[0]["text"]
    assert "failed: &lt;!channel&gt; pg" in text
    assert "<!channel>" not in text


async def test_failures_mention_on_call_successes_do_not(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    failed, succeeded = job_event(1), job_event(2, EventKind.SUCCEEDED)
    await enqueue(redis_client, failed, succeeded)
    notifier = make_notifier(redis_client, fake_slack, oncall_mention="<!subteam^S0ONCALL1>")
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="delivered")
    first, second = fake_slack.posted(CH)
    assert first["text"].startswith("<!subteam^S0ONCALL1> ")
    assert "<!subteam^S0ONCALL1> on call" in json.dumps(first["blocks"])
    assert "S0ONCALL1" not in second["text"] + json.dumps(second["blocks"])


async def test_an_entry_that_keeps_hitting_a_bug_is_dead_lettered_and_the_queue_moves(
    redis_client: aioredis.Redis, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison, fine = job_event(1), job_event(2)
    real = bot.alerts.send.alert_metadata

    def metadata(event_ids: list[str]) -> dict[str, Any]:
        if poison.event_id in event_ids:
            raise RuntimeError("a bug that only this event triggers")
        return real(event_ids)

    monkeypatch.setattr("bot.alerts.deliver.alert_metadata", metadata)
    await enqueue(redis_client, poison, fine)
    async with running(make_notifier(redis_client, fake_slack)):
        await wait_until(lambda: outbox_empty(redis_client), within=15, what="queue moved on")
    assert delivered(fake_slack) == [fine.event_id]
    [letter] = await dead_letters(redis_client)
    assert letter["event_id"] == poison.event_id
    assert letter["reason"] == "bot_error"
    assert "a bug that only this event triggers" in letter["detail"]
