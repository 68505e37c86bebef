"""The notifier when Slack pushes back: outages, 429s, refused channels and blocks, revoked
tokens, pacing, storms, long errors, slow answers and the history limits of 2025. Real Redis,
FakeSlack over real HTTP, test-sized timings."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

import bot.alerts.send
from bot.alerts.render import render_alert, render_plain
from bot.app.health import Health
from bot.app.metrics import Metrics
from bot.blockkit import MAX_SECTION_TEXT
from bot.domain.events import EventKind
from bot.sim.slack_api import block_errors
from bot.sim.slack_history import LIMITED
from tests.fakes import FakeSlack
from tests.notifier_helpers import (
    CH,
    KEYS,
    T0,
    action_ids,
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
    to,
)
from tests.redis_backends import Backend
from tests.waiting import wait_until


async def test_slack_down_then_back_delivers_everything_once_in_order(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    metrics = Metrics()
    events = [job_event(i, EventKind.SUCCEEDED if i % 2 else EventKind.FAILED) for i in range(6)]
    fake_slack.down = True
    await enqueue(redis_client, *events)
    notifier = await make_notifier(redis_client, fake_slack, metrics=metrics)
    async with running(notifier):
        # It posted once; since then every retry looks in the history first (a 503 leaves
        # doubt), which fails too while Slack is down.
        await fake_slack.wait_for(lambda f: len(f.calls_to("conversations.history")) >= 2)
        assert fake_slack.posted() == []
        fake_slack.down = False
        await wait_until(lambda: outbox_empty(redis_client), within=15, what="all delivered")
    assert delivered(fake_slack) == [e.event_id for e in events]  # each once, in order
    assert counter(metrics, "tjb_messages_total", outcome="retried") >= 2
    assert counter(metrics, "tjb_messages_total", outcome="sent") == 6
    # After a 503 nobody knows whether Slack posted: the history was checked first.
    assert fake_slack.calls_to("conversations.history", CH)


async def test_after_a_30s_outage_the_backlog_drains_within_2s_of_slack_healing(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    events = [job_event(i) for i in range(4)]
    await enqueue(redis_client, *events)
    fake_slack.down = True
    # Production back-off (1 s doubling to a 60 s cap): without the reset it would be
    # waiting ~30 s more when Slack heals.
    notifier = await make_notifier(
        redis_client, fake_slack, backoff_base=1.0, backoff_cap=60.0, probe_every=1.0
    )
    async with running(notifier):
        await fake_slack.wait_for(lambda f: len(f.calls_to("chat.postMessage")) >= 1, within=10)
        started = time.monotonic()
        await wait_until(lambda: time.monotonic() - started >= 30, within=35, what="30 s down")
        fake_slack.down = False
        healed = time.monotonic()
        await fake_slack.wait_for(lambda f: len(f.posted(CH)) >= 1, within=5)
        first_post = time.monotonic() - healed
        await wait_until(lambda: outbox_empty(redis_client), within=15, what="all delivered")
    assert first_post <= 2.0, f"the backlog started draining {first_post:.1f}s after healing"
    assert delivered(fake_slack) == [e.event_id for e in events]


async def test_a_5xx_keeps_order_within_the_channel(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    events = [job_event(i) for i in range(3)]
    await enqueue(redis_client, *events)
    fake_slack.fail("chat.postMessage", status=500, error="internal_error", channel=CH)
    async with running(await make_notifier(redis_client, fake_slack)):
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
    notifier = await make_notifier(redis_client, fake_slack, metrics=metrics, router=to("A", "B"))
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
    gone = [job_event(i, connector_id=f"old-{i}") for i in (1, 3)]
    both = job_event(4, connector_id="both")
    fine = job_event(2)
    await enqueue(redis_client, gone[0], fine, gone[1], both)
    router = routes({"old-1": ["C0GONE"], "old-3": ["C0GONE"], "both": ["C0GONE", CH]})
    notifier = await make_notifier(redis_client, fake_slack, metrics=metrics, router=router)
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


async def test_a_revoked_token_pauses_all_delivery_and_it_resumes_by_itself(
    backend: Backend, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    r = backend.client()
    events = [job_event(i) for i in range(9)]  # nine connectors, three a channel
    await enqueue(r, *events)
    fake_slack.fail(None, error="token_revoked", times=10**6)  # every call, auth.test too
    health = Health(
        redis=r,
        keys=KEYS,
        metrics=Metrics(),
        replica="n1",
        clock=lambda: T0,
        poll_interval=None,
    )
    router = routes({f"conn-{i:03d}": ["ABC"[i % 3]] for i in range(9)})
    notifier = await make_notifier(r, fake_slack, router=router)
    with caplog.at_level(logging.ERROR):
        async with running(notifier):

            async def paused() -> bool:
                return not (await health.readiness()).ok

            await wait_until(paused, within=10, what="/readyz says not ready")
            report = await health.readiness()
            ok, detail = report.checks["delivery"]
            assert not ok and "token_revoked" in detail and "SLACK_BOT_TOKEN" in detail
            calls = len(fake_slack.calls)
            await fake_slack.wait_for(lambda f: len(f.calls_to("auth.test")) >= 3, within=10)
            posts_while_paused = len(fake_slack.calls_to("chat.postMessage"))
            assert await dead_letters(r) == []  # nothing dead-lettered
            assert posts_while_paused <= 3  # one per channel at most, then everything waits
            fake_slack.failures.clear()  # the token works again
            await wait_until(lambda: outbox_empty(r), within=15, what="all delivered")
            assert (await health.readiness()).ok
    assert calls > 0
    assert Counter(e for ch in "ABC" for e in delivered(fake_slack, ch)) == Counter(
        e.event_id for e in events
    )
    assert await dead_letters(r) == []
    assert "token_revoked" in caplog.text and "nothing is dead-lettered" in caplog.text


async def test_invalid_blocks_get_one_plain_text_retry(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    metrics = Metrics()
    e = job_event(1, message="bad <!here> & stuff")
    await enqueue(redis_client, e)
    fake_slack.fail("chat.postMessage", error="invalid_blocks")
    batch = await (await make_notifier(redis_client, fake_slack, metrics=metrics)).run_once()
    assert batch.acked == 1
    first, second = fake_slack.calls_to("chat.postMessage")
    assert "blocks" in first.body and "blocks" not in second.body
    [message] = fake_slack.posted(CH)
    # The failure's card, as text: the alert, then the incident's status line (no buttons).
    assert message["text"].startswith(render_plain(render_alert(e, now=T0)))
    assert "Failed once since" in message["text"] and "Acknowledge" not in message["text"]
    assert "&lt;!here&gt; &amp; stuff" in message["text"]
    assert event_ids(message) == [e.event_id]  # still findable after a crash
    assert counter(metrics, "tjb_messages_total", outcome="plain_text_fallback") == 1


async def test_refused_twice_is_dead_lettered_after_exactly_two_calls(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    await enqueue(redis_client, job_event(1), job_event(2))
    fake_slack.fail("chat.postMessage", error="msg_too_long", times=2)
    batch = await (await make_notifier(redis_client, fake_slack)).run_once()
    assert batch.acked == 2
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
    notifier = await make_notifier(redis_client, fake_slack, metrics=metrics, pace=1.0)
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
    # 300 connectors failing at once (a storm of first failures: 300 incidents' cards).
    events = [job_event(i, message=nasty) for i in range(300)]
    await enqueue(redis_client, *events)
    notifier = await make_notifier(redis_client, fake_slack, digest_threshold=5, batch_size=100)
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
    assert not any(m["thread_ts"] for m in fake_slack.posted())  # digests get no threads


async def test_a_few_events_are_not_a_digest(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    notifier = await make_notifier(redis_client, fake_slack, digest_threshold=5)
    await enqueue(redis_client, *(job_event(i) for i in range(5)))
    await notifier.run_once()
    assert len(fake_slack.posted(CH)) == 5
    await enqueue(redis_client, *(job_event(i) for i in range(10, 16)))
    await notifier.run_once()
    assert len(fake_slack.posted(CH)) == 6
    assert len(event_ids(fake_slack.posted(CH)[-1])) == 6


async def test_a_long_error_is_threaded_exactly_once_after_the_main_post(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    text = "HEAD\n" + "\n".join(f"frame {i}" for i in range(1500)) + "\nTAIL"
    e = job_event(1, message=text)
    await enqueue(redis_client, e)
    chunks = render_alert(e, now=T0).thread_chunks
    assert len(chunks) >= 2
    notifier = await make_notifier(redis_client, fake_slack, pace=0.2)
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=15, what="acked")
    main, *replies = fake_slack.posted(CH)
    assert main["thread_ts"] is None and event_ids(main) == [e.event_id]
    assert [r["text"] for r in replies] == chunks
    assert all(r["thread_ts"] == main["ts"] for r in replies)
    assert all(len(r["text"]) <= MAX_SECTION_TEXT for r in replies)
    assert [a for r in replies for a in action_ids(r)] == [
        f"{e.event_id}|{CH}|reply.{n}" for n in range(1, len(chunks) + 1)
    ]
    calls = fake_slack.calls_to("chat.postMessage", CH)
    assert all(b.at - a.at >= 0.15 for a, b in itertools.pairwise(calls))  # paced


async def test_a_reply_slack_took_but_answered_too_late_is_found_in_the_thread(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    e = job_event(1, message="x" * 10_000)
    await enqueue(redis_client, e)
    chunks = render_alert(e, now=T0).thread_chunks
    notifier = await make_notifier(
        redis_client, fake_slack, slack_timeout=1.0, margin=0.5, pace=0.3
    )
    await notifier.run_once()  # the main post; the pace gate holds the replies back
    fake_slack.hold("chat.postMessage", 3.0)  # the first reply goes in; its answer is late
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=20, what="acked")
    replies = [m for m in fake_slack.posted(CH) if m["thread_ts"]]
    assert [r["text"] for r in replies] == chunks  # each chunk once
    assert fake_slack.calls_to("conversations.replies", CH)  # it looked in the thread


async def test_a_refused_thread_reply_never_reposts_the_main_message(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    e = job_event(1, message="x" * 10_000)
    await enqueue(redis_client, e)
    notifier = await make_notifier(redis_client, fake_slack, pace=0.3)
    await notifier.run_once()  # the main post; the pace gate holds the replies back
    assert delivered(fake_slack) == [e.event_id]
    fake_slack.fail("chat.postMessage", error="cannot_reply_to_message", times=99)
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="acked")
    posts = fake_slack.calls_to("chat.postMessage")
    assert len([c for c in posts if c.body.get("thread_ts")]) == 1  # one refused reply, no more
    assert {d["reason"] for d in await dead_letters(redis_client)} == {"cannot_reply_to_message"}


async def test_a_channel_that_refuses_thread_replies_still_gets_the_next_alerts(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    fake_slack.non_threadable = {CH}
    long = job_event(1, message="x" * 10_000)
    later = [job_event(i) for i in (2, 3, 4)]
    assert len(render_alert(long, now=T0).thread_chunks) >= 2
    await enqueue(redis_client, long, *later)
    notifier = await make_notifier(redis_client, fake_slack)
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="acked")
    # A refused reply condemns its own thread, not the channel: every alert is posted.
    assert delivered(fake_slack) == [e.event_id for e in [long, *later]]
    posts = fake_slack.calls_to("chat.postMessage", CH)
    assert len([c for c in posts if c.body.get("thread_ts")]) == 1  # the rest were skipped
    assert [(d["action_id"], d["reason"]) for d in await dead_letters(redis_client)] == [
        (f"{long.event_id}|{CH}|reply.1", "restricted_action_non_threadable_channel")
    ]


async def test_a_rendering_bug_does_not_hold_the_channel(
    redis_client: aioredis.Redis, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in rendering")

    monkeypatch.setattr("bot.alerts.plan.render_alert", broken)
    events = [job_event(1, connector_id="<!channel> pg")]
    await enqueue(redis_client, *events)
    async with running(await make_notifier(redis_client, fake_slack)):
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
    notifier = await make_notifier(redis_client, fake_slack, mention="<!subteam^S0ONCALL1>")
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="delivered")
    first, second = fake_slack.posted(CH)
    assert first["text"].startswith("<!subteam^S0ONCALL1> ")
    assert "<!subteam^S0ONCALL1> on call" in json.dumps(first["blocks"])
    assert "S0ONCALL1" not in second["text"] + json.dumps(second["blocks"])


async def test_an_action_that_keeps_hitting_a_bug_is_quarantined_and_the_queue_moves(
    backend: Backend, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = backend.client()
    poison, fine = job_event(1), job_event(2)
    real = bot.alerts.send.metadata

    def metadata(actions: Any, events: Any) -> dict[str, Any]:
        events = list(events)
        if poison.event_id in events:
            raise RuntimeError("a bug that only this event triggers")
        return real(actions, events)

    monkeypatch.setattr("bot.alerts.deliver.metadata", metadata)
    await enqueue(r, poison, fine)
    async with running(await make_notifier(r, fake_slack, max_strikes=3)):
        await wait_until(lambda: outbox_empty(r), within=15, what="queue moved on")
    assert delivered(fake_slack) == [fine.event_id]
    [letter] = await dead_letters(r)
    assert letter["event_id"] == poison.event_id
    assert letter["reason"] == "bot_error"
    assert "a bug that only this event triggers" in letter["detail"]


async def test_a_post_slack_accepts_but_answers_after_the_lease_is_posted_once(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    r1, r2 = backend.client(), backend.client()
    e = job_event(1)
    await enqueue(r1, e)
    # lease = 2 * (1 s timeout + 0.5 s margin) = 3 s; Slack answers after 5 s.
    fake_slack.hold("chat.postMessage", 5.0)
    a = await make_notifier(r1, fake_slack, who="a", slack_timeout=1.0, margin=0.5)
    b = await make_notifier(r2, fake_slack, who="b", slack_timeout=1.0, margin=0.5)
    async with running(a, b):
        await wait_until(lambda: outbox_empty(r1), within=20, what="acked")
    assert delivered(fake_slack) == [e.event_id]  # exactly one message in the channel
    assert fake_slack.calls_to("conversations.history", CH)  # found, not posted again


@pytest.mark.timeout(200)
async def test_the_history_check_works_within_the_2025_limits(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    """1 request a minute and 15 messages a page: the search waits out the 429 and carries on
    from where it was; a 429 is never taken for "not found". Takes a real minute."""
    fake_slack.history_tier = LIMITED
    e = job_event(1)
    await enqueue(redis_client, e)
    notifier = await make_notifier(redis_client, fake_slack, slack_timeout=2.0, margin=1.0)
    fake_slack.hold("chat.postMessage", 4.0)  # posted, but the answer comes too late
    await notifier.run_once()
    assert len(fake_slack.posted(CH)) == 1 and await redis_client.xlen(KEYS.outbox) == 1
    people = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.base_url)
    for i in range(20):  # people talk after our post: it is on the second page now
        await people.chat_postMessage(channel=CH, text=f"hi {i}")
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=120, what="found")
    assert delivered(fake_slack) == [e.event_id]  # found on the second page, not reposted
    history = fake_slack.calls_to("conversations.history", CH)
    assert any(c.body.get("cursor") for c in history)  # it paged on after the 429
    assert all(int(c.body["limit"]) >= 15 for c in history)
    [first, *_] = history
    assert float(first.body["oldest"]) > time.time() - 300  # a narrow window, not all history
