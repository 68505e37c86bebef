"""The notifier against real Redis and FakeSlack over real HTTP: delivery, exactly once,
crash recovery, reclaiming, and the outbox contract with the poller."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts.notifier import Notifier
from bot.alerts.render import render_alert
from bot.alerts.route import route, single_channel_router
from bot.alerts.send import EVENT_TYPE, alert_metadata
from bot.app.metrics import Metrics
from bot.domain.events import EventKind
from storage.delivery import DeliveryRecord, DeliveryState, DeliveryStore, record_field
from tests.fakes import FakeSlack
from tests.notifier_helpers import (
    CH,
    KEYS,
    T0,
    counter,
    dead_letters,
    delivered,
    enqueue,
    job_event,
    make_notifier,
    outbox_empty,
    running,
)
from tests.waiting import wait_until


async def record(r: aioredis.Redis, event_id: str, channel: str = CH) -> DeliveryRecord:
    raw = await r.hget(KEYS.delivery, record_field(event_id, channel))
    assert raw is not None
    return DeliveryRecord.model_validate_json(raw)


# --- routing ---------------------------------------------------------------------------------


def test_route_goes_to_the_alert_channel_or_nowhere() -> None:
    e = job_event(1)
    assert route(e, alert_channel="C1") == ["C1"]
    assert route(e, alert_channel=None) == []
    assert route(e, alert_channel="  ") == []
    assert single_channel_router(" C1 ")(e) == ["C1"]


# --- one event -------------------------------------------------------------------------------


async def test_one_event_one_message_with_content_and_metadata(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    metrics = Metrics()
    e = job_event(1, connector_id="postgres-main", dest_table="public.orders", message="denied")
    await enqueue(redis_client, e)
    notifier = make_notifier(redis_client, fake_slack, metrics=metrics)
    result = await notifier.run_once()
    assert (result.read, result.sent, result.acked, result.deferred) == (1, 1, 1, 0)
    [message] = fake_slack.posted(CH)
    assert message["text"] == ":x: postgres-main → public.orders failed: denied"
    assert message["blocks"] == render_alert(e, now=T0).blocks
    assert message["metadata"] == {
        "event_type": EVENT_TYPE,
        "event_payload": {"event_id": e.event_id},
    }
    [call] = fake_slack.calls_to("chat.postMessage")
    assert call.body["unfurl_links"] is False
    stored = await record(redis_client, e.event_id)
    assert stored.state is DeliveryState.SENT and stored.ts == message["ts"]
    assert await outbox_empty(redis_client)
    assert await redis_client.xpending(KEYS.outbox, "notifier") == {
        "pending": 0, "min": None, "max": None, "consumers": []
    }  # fmt: skip
    assert counter(metrics, "tjb_messages_total", outcome="sent") == 1
    assert counter(metrics, "tjb_outbox_backlog") == 0
    assert (await notifier.run_once()).read == 0  # nothing left, nothing posted again
    assert len(fake_slack.posted()) == 1


async def test_backlog_metrics_count_unsent_entries(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    metrics = Metrics()
    notifier = make_notifier(redis_client, fake_slack, metrics=metrics)
    await enqueue(redis_client, job_event(1), job_event(2))
    await notifier.refresh_backlog_metrics()
    assert counter(metrics, "tjb_outbox_backlog") == 2
    assert counter(metrics, "tjb_outbox_oldest_age_seconds") >= 0
    await notifier.run_once()
    assert counter(metrics, "tjb_outbox_backlog") == 0


async def test_events_go_in_stream_order(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    events = [job_event(i, kind) for i, kind in enumerate(EventKind)]
    await enqueue(redis_client, *events)
    await make_notifier(redis_client, fake_slack).run_once()
    assert delivered(fake_slack) == [e.event_id for e in events]


# --- exactly once ----------------------------------------------------------------------------


async def test_crash_between_post_and_sent_record_posts_once(
    redis_client: aioredis.Redis, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = job_event(1)
    await enqueue(redis_client, e)
    crashing = make_notifier(redis_client, fake_slack, consumer="crashing")

    async def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("process killed before recording sent")

    monkeypatch.setattr(crashing.store, "mark", crash)
    await crashing.run_once()  # posts, then cannot record: the entry stays pending
    assert len(fake_slack.posted(CH)) == 1
    assert (await record(redis_client, e.event_id)).state is DeliveryState.IN_FLIGHT
    assert int(await redis_client.xlen(KEYS.outbox)) == 1
    # A new replica (another consumer id) reclaims the entry once it is idle.
    survivor = make_notifier(redis_client, fake_slack, consumer="survivor")
    async with running(survivor):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="acked")
    assert delivered(fake_slack) == [e.event_id]  # not posted a second time
    assert len(fake_slack.calls_to("conversations.history", CH)) >= 1
    history = fake_slack.calls_to("conversations.history", CH)[0]
    assert history.body["include_all_metadata"] in (True, "true", "1")
    stored = await record(redis_client, e.event_id)
    assert stored.state is DeliveryState.SENT and stored.ts == fake_slack.posted(CH)[0]["ts"]


async def test_in_flight_but_never_posted_is_posted_once(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    e = job_event(1)
    await enqueue(redis_client, e)
    dead = DeliveryStore(redis_client, KEYS, consumer="dead")
    await dead.ensure_group()
    await dead.read(10)
    await dead.claim([(e.event_id, CH)], now=datetime.now(UTC), lease=timedelta(seconds=1))
    async with running(make_notifier(redis_client, fake_slack, consumer="n2")):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="acked")
    assert delivered(fake_slack) == [e.event_id]
    assert fake_slack.calls_to("conversations.history", CH)  # it looked before posting


async def test_found_in_a_digest_is_not_posted_again(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    events = [job_event(i) for i in range(3)]
    await enqueue(redis_client, *events)
    dead = DeliveryStore(redis_client, KEYS, consumer="dead")
    await dead.ensure_group()
    await dead.read(10)
    pairs = [(e.event_id, CH) for e in events]
    await dead.claim(pairs, now=datetime.now(UTC), lease=timedelta(seconds=1))
    # The dead replica had posted a digest of the first two before it died.
    slack = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.base_url)
    ids = [e.event_id for e in events[:2]]
    await slack.chat_postMessage(channel=CH, text="digest", metadata=alert_metadata(ids))
    async with running(make_notifier(redis_client, fake_slack, consumer="n2")):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="acked")
    assert Counter(delivered(fake_slack)) == Counter(e.event_id for e in events)


async def test_sent_but_not_acked_is_acked_without_posting(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    e = job_event(1)
    await enqueue(redis_client, e)
    dead = DeliveryStore(redis_client, KEYS, consumer="dead")
    await dead.ensure_group()
    await dead.read(10)
    sent = DeliveryRecord(state=DeliveryState.SENT, at=datetime.now(UTC), ts="1.000001")
    await dead.mark({(e.event_id, CH): sent})
    notifier = make_notifier(redis_client, fake_slack, consumer="n2")
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="acked")
    assert fake_slack.calls == []  # not even a history check


async def test_racing_replicas_post_each_event_once(
    redis_client: aioredis.Redis, fake_slack: FakeSlack, redis_url: str
) -> None:
    events = [job_event(i) for i in range(30)]
    await enqueue(redis_client, *events)
    other = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        a = make_notifier(redis_client, fake_slack, consumer="a", batch_size=4)
        b = make_notifier(other, fake_slack, consumer="b", batch_size=4)
        async with running(a, b):
            await wait_until(lambda: outbox_empty(redis_client), within=20, what="all acked")
    finally:
        await other.aclose()
    got = delivered(fake_slack)
    assert Counter(got) == Counter(e.event_id for e in events)
    assert got == sorted(got)  # one channel: stream order held across the two replicas


async def test_dead_consumers_pending_entries_are_reclaimed_in_order(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    first, second = job_event(1), job_event(2)
    await enqueue(redis_client, first)
    dead = DeliveryStore(redis_client, KEYS, consumer="dead")
    await dead.ensure_group()
    assert len(await dead.read(10)) == 1  # delivered to a replica that then died
    await enqueue(redis_client, second)
    notifier = make_notifier(redis_client, fake_slack, consumer="alive", reclaim_idle=0.5)
    result = await notifier.run_once()
    # The later event waits: the earlier one for the same channel is still pending elsewhere.
    assert result.sent == 0 and result.deferred == 1
    async with running(notifier):
        await wait_until(lambda: outbox_empty(redis_client), within=10, what="reclaimed")
    assert delivered(fake_slack) == [first.event_id, second.event_id]
    pending = await redis_client.xpending(KEYS.outbox, "notifier")
    assert pending["pending"] == 0


# --- bad entries -----------------------------------------------------------------------------


async def test_malformed_and_unroutable_entries_are_dead_lettered(
    redis_client: aioredis.Redis, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    await redis_client.xadd(KEYS.outbox, {"event_id": "x", "event": "{not json"})
    await redis_client.xadd(KEYS.outbox, {"event": job_event(9).model_dump_json()})
    nowhere = job_event(1, connector_id="nowhere")
    good = job_event(2)
    await enqueue(redis_client, nowhere, good)

    def router(event: Any, /) -> list[str]:
        return [] if event.job.connector_id == "nowhere" else [CH]

    notifier = make_notifier(redis_client, fake_slack, router=router)
    with caplog.at_level(logging.WARNING):
        result = await notifier.run_once()
    assert result.acked == 4 and result.dead_lettered == 3
    assert delivered(fake_slack) == [good.event_id]
    dead = await dead_letters(redis_client)
    assert [f["reason"] for f in dead] == ["malformed", "malformed", "no_route"]
    assert dead[2]["event_id"] == nowhere.event_id
    assert "no channel to go to" in caplog.text
    assert await outbox_empty(redis_client)


async def test_a_deleted_pending_entry_is_just_acknowledged(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    [entry_id] = await enqueue(redis_client, job_event(1))
    dead = DeliveryStore(redis_client, KEYS, consumer="n1")
    await dead.ensure_group()
    await dead.read(10)
    await redis_client.xdel(KEYS.outbox, entry_id)
    await make_notifier(redis_client, fake_slack).run_once()
    assert fake_slack.calls == []
    assert (await redis_client.xpending(KEYS.outbox, "notifier"))["pending"] == 0


async def test_a_router_error_leaves_the_entry_pending(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    await enqueue(redis_client, job_event(1))

    def broken(event: Any, /) -> list[str]:
        raise LookupError("subscriptions unavailable")

    result = await make_notifier(redis_client, fake_slack, router=broken).run_once()
    assert result.deferred == 1 and result.acked == 0
    assert int(await redis_client.xlen(KEYS.outbox)) == 1
    await make_notifier(redis_client, fake_slack).run_once()  # fixed router: delivered
    assert len(delivered(fake_slack)) == 1


async def test_the_group_is_recreated_if_the_stream_is_deleted(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    notifier = make_notifier(redis_client, fake_slack)
    await notifier.run_once()
    await redis_client.delete(KEYS.outbox)
    with pytest.raises(Exception, match="NOGROUP"):
        await notifier.run_once()
    await enqueue(redis_client, job_event(1))
    assert (await notifier.run_once()).sent == 1


async def test_metadata_of_one_and_of_many() -> None:
    assert alert_metadata(["a"]) == {"event_type": EVENT_TYPE, "event_payload": {"event_id": "a"}}
    many = alert_metadata(["a", "b"])
    assert json.loads(json.dumps(many))["event_payload"] == {"event_ids": ["a", "b"]}


async def test_run_forever_stops_when_asked(
    redis_client: aioredis.Redis, fake_slack: FakeSlack
) -> None:
    notifier: Notifier = make_notifier(redis_client, fake_slack, block=0.5)
    async with running(notifier):
        await enqueue(redis_client, job_event(1))
        await fake_slack.wait_for(lambda f: len(f.posted(CH)) == 1, within=10)
    # `running` awaited the task after stop: it returned rather than hanging in a read.
