"""The notifier against real Redis and FakeSlack over real HTTP: delivery, exactly once,
crash recovery, takeover between replicas, and the outbox contract with the poller."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts.route import single_channel_router
from bot.alerts.send import EVENT_TYPE, metadata
from bot.app.metrics import Metrics
from bot.domain.delivery import ActionRecord, RecordState, Route, action_id
from bot.domain.events import EventKind, JobEvent
from storage.connection import Redis
from storage.consumer import OutboxConsumer
from storage.records import ActionRecords
from tests.fakes import FakeSlack
from tests.notifier_helpers import (
    CH,
    KEYS,
    counter,
    dead_letters,
    delivered,
    enqueue,
    job_event,
    make_notifier,
    outbox_empty,
    running,
)
from tests.redis_backends import Backend
from tests.replica_helpers import alive, die, identity
from tests.waiting import wait_until


def post_of(event: JobEvent, channel: str = CH) -> str:
    return action_id(event.event_id, channel, "post")


async def record(r: Redis, action: str) -> ActionRecord:
    raw = await r.hget(KEYS.actions, action)
    assert raw is not None
    return ActionRecord.model_validate_json(raw)


async def held_by_a_dead_replica(r: Redis, *events: JobEvent, sending: bool) -> None:
    """A replica read the entries, claimed their posts (and began sending), then died."""
    dead = identity("dead")
    await alive(r, KEYS, dead)
    consumer = OutboxConsumer(r, KEYS, consumer="dead")
    await consumer.ensure_group()
    await consumer.read_new(100, block_ms=None)
    records = ActionRecords(r, KEYS, dead)
    claim = await records.claim(CH, [post_of(e) for e in events], lease_ms=60_000)
    if sending:
        tokens = [(a, c.record.token) for a, c in claim.claims.items()]
        assert (await records.begin(CH, tokens, min_left_ms=0, pace_ms=0)).ok
    await die(r, KEYS, dead)


# --- routing ---------------------------------------------------------------------------------


def test_a_single_channel_router_mentions_only_failures() -> None:
    failed, ok = job_event(1), job_event(2, EventKind.SUCCEEDED)
    assert single_channel_router("C1", "<!here>")(failed) == [
        Route(channel="C1", mention="<!here>")
    ]
    assert single_channel_router("C1", "<!here>")(ok) == [Route(channel="C1")]
    assert single_channel_router(None)(failed) == []
    assert single_channel_router("  ")(failed) == []
    assert single_channel_router(" C1 ")(failed) == [Route(channel="C1")]


# --- one event -------------------------------------------------------------------------------


async def test_one_event_one_message_with_content_and_metadata(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    r = backend.client()
    metrics = Metrics()
    e = job_event(1, connector_id="postgres-main", dest_table="public.orders", message="denied")
    await enqueue(r, e)
    notifier = await make_notifier(r, fake_slack, metrics=metrics)
    batch = await notifier.run_once()
    assert (batch.read, batch.planned, batch.final, batch.acked) == (1, 1, 1, 1)
    [message] = fake_slack.posted(CH)
    assert message["text"] == ":x: postgres-main → public.orders failed: denied"
    assert message["metadata"] == metadata([post_of(e)], [e.event_id])
    [call] = fake_slack.calls_to("chat.postMessage")
    assert call.body["unfurl_links"] is False
    stored = await record(r, post_of(e))
    assert stored.state is RecordState.SENT and stored.ts == message["ts"]
    assert await outbox_empty(r)
    assert not await r.hlen(KEYS.plans)  # the plan went with the entry
    assert (await r.xpending(KEYS.outbox, "notifier"))["pending"] == 0
    assert counter(metrics, "tjb_messages_total", outcome="sent") == 1
    assert counter(metrics, "tjb_outbox_backlog") == 0
    assert (await notifier.run_once()).read == 0  # nothing left, nothing posted again
    assert len(fake_slack.posted()) == 1


async def test_events_go_in_stream_order(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    # (progress only ever goes into an open incident's thread: it has no top-level alert)
    kinds = [k for k in EventKind if k is not EventKind.PROGRESSING]
    events = [job_event(i, kind) for i, kind in enumerate(kinds)]
    await enqueue(redis_client, *events)
    await (await make_notifier(redis_client, fake_slack)).run_once()
    assert delivered(fake_slack) == [e.event_id for e in events]


async def test_a_plan_is_stored_once_and_survives_a_change_of_routes(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    e = job_event(1)
    await enqueue(redis_client, e)
    first = await make_notifier(redis_client, fake_slack, who=identity("a"))
    fake_slack.down = True
    await first.run_once()  # planned for CH, but Slack is down: nothing final
    assert await redis_client.hlen(KEYS.plans) == 1
    await first.stand_down(release=True)
    fake_slack.down = False
    rerouted = await make_notifier(
        redis_client, fake_slack, who=identity("b"), router=single_channel_router("C0ELSE")
    )
    async with running(rerouted):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="delivered")
    assert delivered(fake_slack, CH) == [e.event_id] and delivered(fake_slack, "C0ELSE") == []


# --- exactly once ----------------------------------------------------------------------------


async def test_crash_between_post_and_record_posts_once(
    backend: Backend, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = backend.client()
    e = job_event(1)
    await enqueue(r, e)
    crashing_id = identity("crashing")
    crashing = await make_notifier(r, fake_slack, who=crashing_id)

    async def killed(*args: Any, **kwargs: Any) -> list[str]:
        raise RuntimeError("process killed before recording sent")

    monkeypatch.setattr(crashing.records, "finish", killed)
    await crashing.run_once()  # posts, then cannot record: the entry stays pending
    assert len(fake_slack.posted(CH)) == 1
    stored = await record(r, post_of(e))
    assert stored.state is RecordState.IN_FLIGHT and stored.doubt
    await die(r, KEYS, crashing_id)
    survivor = await make_notifier(r, fake_slack, who=identity("survivor"))
    async with running(survivor):
        await wait_until(lambda: outbox_empty(r), within=10, what="acked")
    assert delivered(fake_slack) == [e.event_id]  # not posted a second time
    [history] = fake_slack.calls_to("conversations.history", CH)
    assert history.body["include_all_metadata"] in (True, "true", "1")
    stored = await record(r, post_of(e))
    assert stored.state is RecordState.SENT and stored.ts == fake_slack.posted(CH)[0]["ts"]


async def test_claimed_but_never_sent_is_posted_once_without_a_search(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    e = job_event(1)
    await enqueue(redis_client, e)
    await held_by_a_dead_replica(redis_client, e, sending=False)
    async with running(await make_notifier(redis_client, fake_slack, who="n2")):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="acked")
    assert delivered(fake_slack) == [e.event_id]
    # It never reached the Slack call: no doubt, so no history search was needed.
    assert fake_slack.calls_to("conversations.history", CH) == []


async def test_killed_while_sending_but_never_posted_is_posted_once(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    e = job_event(1)
    await enqueue(redis_client, e)
    await held_by_a_dead_replica(redis_client, e, sending=True)
    async with running(await make_notifier(redis_client, fake_slack, who="n2")):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="acked")
    assert delivered(fake_slack) == [e.event_id]
    assert fake_slack.calls_to("conversations.history", CH)  # it looked before posting


async def test_found_in_a_digest_is_not_posted_again(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    events = [job_event(i) for i in range(3)]
    await enqueue(redis_client, *events)
    await held_by_a_dead_replica(redis_client, *events, sending=True)
    # The dead replica had posted a digest of the first two before it died.
    slack = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.base_url)
    meta = metadata([post_of(e) for e in events[:2]], [e.event_id for e in events[:2]])
    await slack.chat_postMessage(channel=CH, text="digest", metadata=meta)
    async with running(await make_notifier(redis_client, fake_slack, who="n2")):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="acked")
    assert Counter(delivered(fake_slack)) == Counter(e.event_id for e in events)


async def test_sent_but_not_acked_is_acked_without_calling_slack(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    e = job_event(1)
    await enqueue(redis_client, e)
    dead = identity("dead")
    await alive(redis_client, KEYS, dead)
    records = ActionRecords(redis_client, KEYS, dead)
    claim = await records.claim(CH, [post_of(e)], lease_ms=60_000)
    tokens = [(a, c.record.token) for a, c in claim.claims.items()]
    await records.finish(tokens, RecordState.SENT, ts="1.000001")
    async with running(await make_notifier(redis_client, fake_slack, who="n2")):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="acked")
    assert fake_slack.calls == []  # not even a history check


# --- replicas --------------------------------------------------------------------------------


async def test_one_replica_delivers_the_other_stands_by_and_takes_over_when_it_dies(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    first, second = [job_event(i) for i in range(5)], [job_event(i) for i in range(5, 10)]
    r_a, r_b = backend.client(), backend.client()
    a_id = identity("a")
    a = await make_notifier(r_a, fake_slack, who=a_id)
    b = await make_notifier(r_b, fake_slack, who=identity("b"))
    await enqueue(r_a, *first)
    assert (await a.run_once()).acked == 5
    standby = await b.run_once()
    assert not standby.active and not b.active  # a holds the delivery lease
    await enqueue(r_a, *second)
    await die(r_a, KEYS, a_id)  # a is killed: its heartbeat lapses
    taken = await b.run_once()
    assert taken.active and taken.acked == 5
    got = delivered(fake_slack)
    assert got == [e.event_id for e in [*first, *second]]  # each once, in stream order


async def test_replica_clocks_skewed_by_ten_minutes_change_nothing(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    events = [job_event(i) for i in range(6)]
    r_a, r_b = backend.client(), backend.client()
    a_id = identity("a")
    ahead = await make_notifier(
        r_a, fake_slack, who=a_id, clock=lambda: datetime.now(UTC) + timedelta(minutes=10)
    )
    behind = await make_notifier(
        r_b, fake_slack, who="b", clock=lambda: datetime.now(UTC) - timedelta(minutes=10)
    )
    await enqueue(r_a, *events[:3])
    await ahead.run_once()
    assert not (await behind.run_once()).active  # the lease is not "expired" by b's clock
    await enqueue(r_a, *events[3:])
    await die(r_a, KEYS, a_id)
    assert (await behind.run_once()).acked == 3
    assert delivered(fake_slack) == [e.event_id for e in events]


async def test_entries_another_consumer_holds_are_adopted_in_order(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    first, second = job_event(1), job_event(2)
    await enqueue(redis_client, first)
    dead = OutboxConsumer(redis_client, KEYS, consumer="dead")
    await dead.ensure_group()
    assert len(await dead.read_new(10, block_ms=None)) == 1  # read by a replica that died
    await enqueue(redis_client, second)
    notifier = await make_notifier(redis_client, fake_slack, who="alive")
    batch = await notifier.run_once()
    assert batch.acked == 2
    assert delivered(fake_slack) == [first.event_id, second.event_id]
    assert (await redis_client.xpending(KEYS.outbox, "notifier"))["pending"] == 0


async def test_a_restarted_replica_resumes_its_own_pending_entries_at_once(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    e = job_event(1)
    await enqueue(redis_client, e)
    before = identity("pod-1")
    crashed = await make_notifier(redis_client, fake_slack, who=before)
    fake_slack.down = True
    await crashed.run_once()  # read under consumer name pod-1, not delivered
    fake_slack.down = False
    await die(redis_client, KEYS, before)
    restarted = await make_notifier(redis_client, fake_slack, who=identity("pod-1"))
    # No idle time to wait out: the new process takes the lease and its own pending entry
    # (and the claim of its previous life) at once; only the channel's short back-off is left.
    async with running(restarted):
        await wait_until(lambda: outbox_empty(redis_client), within=2, what="resumed")
    assert delivered(fake_slack) == [e.event_id]


# --- bad entries -----------------------------------------------------------------------------


async def test_malformed_entries_are_dead_lettered_and_unrouted_ones_counted(
    redis_client: aioredis.Redis, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    await redis_client.xadd(KEYS.outbox, {"event_id": "x", "event": "{not json"})
    await redis_client.xadd(KEYS.outbox, {"event": job_event(9).model_dump_json()})
    nowhere = job_event(1, connector_id="nowhere")
    good = job_event(2)
    await enqueue(redis_client, nowhere, good)

    def router(event: JobEvent, /) -> list[Route]:
        return [] if event.job.connector_id == "nowhere" else [Route(channel=CH)]

    metrics = Metrics()
    notifier = await make_notifier(redis_client, fake_slack, router=router, metrics=metrics)
    with caplog.at_level(logging.WARNING):
        batch = await notifier.run_once()
    assert batch.acked == 4
    assert delivered(fake_slack) == [good.event_id]
    dead = await dead_letters(redis_client)
    # Malformed entries are kept for an operator; an event no channel subscribed to is not
    # an error: it is acknowledged and counted.
    assert [f["reason"] for f in dead] == ["malformed", "malformed"]
    assert counter(metrics, "tjb_events_unrouted_total") == 1
    assert await outbox_empty(redis_client)


async def test_a_deleted_pending_entry_is_just_acknowledged(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    [entry_id] = await enqueue(redis_client, job_event(1))
    consumer = OutboxConsumer(redis_client, KEYS, consumer="n1")
    await consumer.ensure_group()
    await consumer.read_new(10, block_ms=None)
    await redis_client.xdel(KEYS.outbox, entry_id)
    await (await make_notifier(redis_client, fake_slack, who="n1")).run_once()
    assert fake_slack.calls == []
    assert (await redis_client.xpending(KEYS.outbox, "notifier"))["pending"] == 0


async def test_a_router_error_leaves_the_entry_pending(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    await enqueue(redis_client, job_event(1))

    def broken(event: JobEvent, /) -> list[Route]:
        raise LookupError("subscriptions unavailable")

    failing = await make_notifier(redis_client, fake_slack, router=broken, who=identity("n1"))
    batch = await failing.run_once()
    assert batch.planned == 0 and batch.acked == 0
    assert int(await redis_client.xlen(KEYS.outbox)) == 1
    await failing.stand_down(release=True)
    fixed = await make_notifier(redis_client, fake_slack, who=identity("n2"))
    assert (await fixed.run_once()).acked == 1  # fixed router: delivered
    assert len(delivered(fake_slack)) == 1


async def test_the_group_is_recreated_if_the_stream_is_deleted(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    notifier = await make_notifier(redis_client, fake_slack)
    await notifier.run_once()
    await redis_client.delete(KEYS.outbox)
    with pytest.raises(Exception, match="NOGROUP"):
        await notifier.run_once()
    await enqueue(redis_client, job_event(1))
    assert (await notifier.run_once()).acked == 1


def test_metadata_names_the_actions_and_the_events() -> None:
    meta = metadata(["a|C|post", "b|C|post"], ["a", "b", "a"])
    assert meta["event_type"] == EVENT_TYPE
    assert json.loads(json.dumps(meta))["event_payload"] == {
        "actions": ["a|C|post", "b|C|post"],
        "events": ["a", "b"],
    }


async def test_run_forever_stops_when_asked(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    notifier = await make_notifier(redis_client, fake_slack, block=0.5)
    async with running(notifier):
        await enqueue(redis_client, job_event(1))
        await fake_slack.wait_for(lambda f: len(f.posted(CH)) == 1, within=10)
    # `running` awaited the task after stop: it returned rather than hanging in a read.
    assert await notifier.lease.current_holder() is None  # and gave the lease up
