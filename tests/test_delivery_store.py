"""storage.delivery (the outbox's read side), on real Redis and on fakeredis."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from bot.domain.events import EventKind, JobEvent
from bot.domain.models import Job
from storage.delivery import (
    GROUP,
    Claim,
    DeliveryRecord,
    DeliveryState,
    DeliveryStore,
    OutboxEntry,
    record_field,
)
from storage.keys import Keys
from tests.fakes import make_job
from tests.redis_backends import Backend
from tests.waiting import wait_until

KEYS = Keys("tjb", "org_d")
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def event(i: int) -> JobEvent:
    stamp = NOW.isoformat()
    job = Job.model_validate(
        make_job(f"job_{i}", state="failed", created_at=stamp, updated_at=stamp, finished_at=stamp)
    )
    return JobEvent(org_id="org_d", kind=EventKind.FAILED, job=job, detected_at=NOW)


async def enqueue(r: aioredis.Redis, *events: JobEvent) -> list[str]:
    """Entries exactly as the poller's commit writes them."""
    return [
        str(await r.xadd(KEYS.outbox, {"event_id": e.event_id, "event": e.model_dump_json()}))
        for e in events
    ]


async def test_group_is_created_once_and_an_existing_one_is_fine(r: aioredis.Redis) -> None:
    store = DeliveryStore(r, KEYS, consumer="c1")
    await store.ensure_group()
    await store.ensure_group()
    groups = await r.xinfo_groups(KEYS.outbox)
    assert [g["name"] for g in groups] == [GROUP]


async def test_read_gives_own_pending_first_then_new(r: aioredis.Redis) -> None:
    store = DeliveryStore(r, KEYS, consumer="c1")
    await store.ensure_group()
    ids = await enqueue(r, event(1), event(2))
    first = await store.read(10)
    assert [e.id for e in first] == ids
    assert first[0].event() == event(1) and first[0].event_id == event(1).event_id
    more = await enqueue(r, event(3))
    again = await store.read(10)  # the unacknowledged two again, then the new one
    assert [e.id for e in again] == ids + more
    assert [e.id for e in await store.read(10, max_pending=2)] == ids  # backpressure


async def test_pending_pages_and_block_only_when_idle(r: aioredis.Redis) -> None:
    store = DeliveryStore(r, KEYS, consumer="c1")
    await store.ensure_group()
    ids = await enqueue(r, *(event(i) for i in range(7)))
    assert len(await store.read(3)) == 3
    assert len(await store.read(3)) == 6  # 3 pending + 3 new
    assert [e.id for e in await store.read(3)] == ids  # 6 pending in pages of 3, then 1 new
    await store.ack_and_delete(ids)
    started = time.monotonic()
    assert await store.read(3, block=0.2) == []
    assert time.monotonic() - started >= 0.15  # it did wait for new entries


async def test_ack_and_delete_keeps_the_stream_length_the_backlog(r: aioredis.Redis) -> None:
    store = DeliveryStore(r, KEYS, consumer="c1")
    await store.ensure_group()
    ids = await enqueue(r, event(1), event(2), event(3))
    assert (await store.backlog()).length == 3
    await store.read(10)
    assert await store.ack_and_delete(ids[:2]) == 2
    assert await store.ack_and_delete([]) == 0
    backlog = await store.backlog()
    assert backlog.length == 1 and backlog.oldest_age >= 0
    assert [e.id for e in await store.read(10)] == ids[2:]
    await store.ack_and_delete(ids[2:])
    assert await store.backlog() == type(backlog)(length=0, oldest_age=0.0)


async def test_dead_consumers_entries_are_reclaimed_when_idle(backend: Backend) -> None:
    r = backend.client()
    dead = DeliveryStore(r, KEYS, consumer="dead", reclaim_idle=0.1)
    alive = DeliveryStore(backend.client(), KEYS, consumer="alive", reclaim_idle=0.1)
    await dead.ensure_group()
    ids = await enqueue(r, event(1), event(2))
    assert len(await dead.read(10)) == 2
    assert [e.id for e in await alive.pending_of_others(ids[-1])] == ids

    async def reclaimed() -> bool:
        return [e.id for e in await alive.reclaim(10)] == ids

    await wait_until(reclaimed, within=5, what="reclaimed")
    assert [e.id for e in await alive.read(10)] == ids  # now its own pending
    assert await alive.pending_of_others(ids[-1]) == []
    assert await alive.prune_consumers(idle=0) == 1  # "dead" holds nothing any more


async def test_a_deleted_pending_entry_comes_back_empty(r: aioredis.Redis) -> None:
    store = DeliveryStore(r, KEYS, consumer="c1")
    await store.ensure_group()
    ids = await enqueue(r, event(1))
    await store.read(10)
    await r.xdel(KEYS.outbox, *ids)
    assert await store.read(10) == [OutboxEntry(id=ids[0], fields={})]


async def test_dead_letter_is_capped(r: aioredis.Redis) -> None:
    store = DeliveryStore(r, KEYS, consumer="c1", dead_letter_maxlen=5)
    await store.ensure_group()
    [entry_id] = await enqueue(r, event(1))
    [entry] = await store.read(1)
    for _ in range(300):
        await store.dead_letter(entry, "C1", "channel_not_found", detail="x" * 5000, now=NOW)
    length = await r.xlen(KEYS.dead_letter)
    assert 5 <= length < 300  # approximate trimming (MAXLEN ~)
    rows: Any = await r.xrevrange(KEYS.dead_letter, count=1)
    [(_, fields)] = rows
    assert fields["entry_id"] == entry_id and fields["event_id"] == event(1).event_id
    assert fields["channel"] == "C1" and fields["reason"] == "channel_not_found"
    assert len(fields["detail"]) == 2000
    assert JobEvent.model_validate_json(fields["event"]) == event(1)


async def test_claims_new_retry_busy_done(backend: Backend) -> None:
    a = DeliveryStore(backend.client(), KEYS, consumer="a")
    b = DeliveryStore(backend.client(), KEYS, consumer="b")
    p1, p2 = ("e1", "C1"), ("e2", "C1")
    first = await a.claim([p1], now=NOW, lease=LEASE)
    assert first[p1][0] is Claim.NEW
    later = NOW + timedelta(seconds=5)
    assert (await b.claim([p1], now=later, lease=LEASE))[p1][0] is Claim.BUSY
    again = await a.claim([p1], now=later, lease=LEASE)  # our own earlier attempt
    assert again[p1][0] is Claim.RETRY
    retried = again[p1][1]
    assert retried is not None and retried.at == NOW  # the FIRST attempt's time
    stale = NOW + timedelta(seconds=60)  # a's attempt is older than the lease: a is gone
    taken = await b.claim([p1, p2], now=stale, lease=LEASE)
    assert taken[p1][0] is Claim.RETRY and taken[p2][0] is Claim.NEW
    record = (await a.records([p1]))[p1]
    assert record.consumer == "b" and record.at == NOW and record.attempt_at == stale
    sent = DeliveryRecord(state=DeliveryState.SENT, at=stale, ts="1.000001", replies_due=2)
    await b.mark({p1: sent})
    done = await a.claim([p1], now=stale, lease=LEASE)
    assert done[p1] == (Claim.DONE, sent)
    assert not sent.done and sent.model_copy(update={"replies": 2}).done
    await b.forget([p2])
    assert await a.records([p1, p2]) == {p1: sent}


async def test_unreadable_record_is_treated_as_an_earlier_attempt(r: aioredis.Redis) -> None:
    store = DeliveryStore(r, KEYS, consumer="a")
    await r.hset(KEYS.delivery, record_field("e1", "C1"), "{not json")
    claim, record = (await store.claim([("e1", "C1")], now=NOW, lease=LEASE))[("e1", "C1")]
    assert claim is Claim.RETRY and record is not None and record.at < NOW


async def test_prune_drops_old_and_unreadable_records(r: aioredis.Redis) -> None:
    store = DeliveryStore(r, KEYS, consumer="a")
    old = DeliveryRecord(state=DeliveryState.SENT, at=NOW - timedelta(days=8), ts="1.1")
    new = DeliveryRecord(state=DeliveryState.SENT, at=NOW - timedelta(days=1), ts="1.2")
    await store.mark({(f"old{i}", "C"): old for i in range(700)})
    await store.mark({("new", "C"): new})
    await r.hset(KEYS.delivery, "junk|C", "nope")
    # In flight for 8 days (a long outage): its entry may still be pending, keep it.
    await store.claim([("flying", "C")], now=NOW - timedelta(days=8), lease=LEASE)
    await store.claim([("ancient", "C")], now=NOW - timedelta(days=71), lease=LEASE)
    assert await store.prune_records(now=NOW, max_age=timedelta(days=7)) == 702
    assert sorted(await r.hkeys(KEYS.delivery)) == [
        record_field("flying", "C"),
        record_field("new", "C"),
    ]


async def test_gate_lets_one_post_per_interval(backend: Backend) -> None:
    a = DeliveryStore(backend.client(), KEYS, consumer="a")
    b = DeliveryStore(backend.client(), KEYS, consumer="b")
    assert await a.acquire_gate("C1", 0.2) is True
    assert await b.acquire_gate("C1", 0.2) is False  # another replica: same gate
    assert await b.acquire_gate("C2", 0.2) is True  # another channel: its own gate
    assert await a.acquire_gate("C1", 0) is True  # no pacing asked

    async def open_again() -> bool:
        return await b.acquire_gate("C1", 0.2)

    await wait_until(open_again, within=5, what="gate expired")


async def test_pause_never_shortens_a_longer_pause(r: aioredis.Redis) -> None:
    store = DeliveryStore(r, KEYS, consumer="a")
    assert await store.pause_left("C1") == 0
    await store.pause("C1", 30)
    await store.pause("C1", 1)
    assert 29 < await store.pause_left("C1") <= 30
    await store.pause("C1", 60)
    assert 59 < await store.pause_left("C1") <= 60
    assert await store.pause_left("C2") == 0
