"""storage.subscriptions and the held-back counts of storage.plans, on every backend."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.alerts.plan import plan_entry
from bot.domain.delivery import Route
from bot.domain.events import EventKind
from bot.domain.notices import MuteEnd, MuteSummary
from bot.domain.subscriptions import EventSet, Mute, Subscription, Target
from storage.connection import Redis
from storage.plans import PlanStore
from storage.subscriptions import Put, SubscriptionStore
from tests.notifier_helpers import KEYS, job_event
from tests.redis_backends import Backend

NOW = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)


def sub(channel: str, target: str, events: EventSet = EventSet.FAILURES) -> Subscription:
    return Subscription(channel=channel, target=Target(value=target), events=events, by="U0ANA")


def mute(channel: str, target: str, hours: float = 1) -> Mute:
    return Mute(channel=channel, target=Target(value=target), until=NOW + timedelta(hours=hours))


async def test_subscribe_replace_unsubscribe_and_read_back(backend: Backend) -> None:
    store = SubscriptionStore(backend.client(), KEYS)
    assert await store.subscribe(sub("C1", "pg-*")) is Put.ADDED
    assert await store.subscribe(sub("C1", "pg-*", EventSet.FINISHED)) is Put.REPLACED
    assert await store.subscribe(sub("C2", "all")) is Put.ADDED
    table = await SubscriptionStore(backend.client(), KEYS).table()  # another replica reads
    assert [(s.channel, s.target.value, s.events) for s in table.subscriptions] == [
        ("C1", "pg-*", EventSet.FINISHED),
        ("C2", "all", EventSet.FAILURES),
    ]
    assert await store.unsubscribe("C1", Target(value="pg-*"))
    assert not await store.unsubscribe("C1", Target(value="pg-*"))
    assert [s.channel for s in (await store.table()).subscriptions] == ["C2"]


async def test_a_channel_has_at_most_the_limit(r: Redis) -> None:
    store = SubscriptionStore(r, KEYS, limit=3)
    for i in range(3):
        assert await store.subscribe(sub("C1", f"c{i}")) is Put.ADDED
    assert await store.subscribe(sub("C1", "c9")) is Put.LIMIT
    assert await store.subscribe(sub("C1", "c0", EventSet.ALL)) is Put.REPLACED  # replacing is fine
    assert await store.subscribe(sub("C2", "c9")) is Put.ADDED  # another channel has its own


async def test_unreadable_values_are_left_out_and_logged(r: Redis) -> None:
    store = SubscriptionStore(r, KEYS)
    await store.subscribe(sub("C1", "pg-*"))
    await r.hset(KEYS.subscriptions, "C1|junk", "{not json")
    await r.hset(KEYS.mutes, "C1|junk", json.dumps({"channel": "C1"}))
    table = await store.table()
    assert [s.target.value for s in table.subscriptions] == ["pg-*"]
    assert table.mutes == []


async def held_back(r: Redis, *kinds: EventKind, target: str = "pg-*") -> None:
    """Plan events as a muted channel would, storing each plan (which counts them)."""
    plans = PlanStore(r, KEYS)
    for i, kind in enumerate(kinds):
        event = job_event(i, kind, connector_id="pg-orders", message=f"boom {i}")
        plan = plan_entry(f"1-{i}", event, [Route(channel="C1", muted=target)], now=NOW)
        assert plan.actions == [] and len(plan.held_back) == 1
        assert await plans.save(plan) is not None


async def test_a_mute_counts_once_what_it_held_back_and_ending_it_sums_it_up(
    backend: Backend,
) -> None:
    r = backend.client()
    store = SubscriptionStore(r, KEYS)
    assert await store.mute(mute("C1", "pg-*")) is Put.ADDED
    await held_back(r, EventKind.FAILED, EventKind.FAILED, EventKind.SUCCEEDED, EventKind.CANCELLED)
    again = plan_entry(
        "1-0", job_event(0, connector_id="pg-orders"), [Route(channel="C1", muted="pg-*")], now=NOW
    )
    await PlanStore(r, KEYS).save(again)  # the same entry planned again counts nothing more
    ended = await store.end_mute("C1", Target(value="pg-*"), MuteEnd.UNMUTED, by="ana")
    assert (ended.ended, ended.failures, ended.successes, ended.others) == (True, 3, 1, 0)
    assert json.loads(ended.last_failure)["connector"] == "pg-orders"
    assert await r.hlen(KEYS.held) == 0 and await r.hlen(KEYS.mutes) == 0
    rows: Any = await r.xrange(KEYS.outbox)
    [(_, fields)] = rows
    summary = MuteSummary.model_validate_json(fields["notice"])
    assert fields["event_id"] == summary.event_id
    assert (summary.channel, summary.target, summary.reason, summary.by) == (
        "C1",
        "pg-*",
        MuteEnd.UNMUTED,
        "ana",
    )
    assert (summary.failures, summary.successes) == (3, 1)
    # Ending it again (another replica, the expiry sweep) finds nothing and posts nothing.
    assert not (await store.end_mute("C1", "pg-*", MuteEnd.EXPIRED)).ended
    assert await r.xlen(KEYS.outbox) == 1


async def test_a_mute_that_held_nothing_back_ends_without_a_summary(r: Redis) -> None:
    store = SubscriptionStore(r, KEYS)
    await store.mute(mute("C1", "all"))
    ended = await store.end_mute("C1", "all", MuteEnd.EXPIRED)
    assert ended.ended and ended.total == 0
    assert await r.xlen(KEYS.outbox) == 0


async def test_a_plan_routed_under_a_mute_that_ended_meanwhile_is_not_stored(r: Redis) -> None:
    store = SubscriptionStore(r, KEYS)
    await store.mute(mute("C1", "pg-*"))
    plan = plan_entry("1-0", job_event(0), [Route(channel="C1", muted="pg-*")], now=NOW)
    await store.end_mute("C1", "pg-*", MuteEnd.UNMUTED)
    assert await PlanStore(r, KEYS).save(plan) is None  # plan it again: no longer muted
    assert await r.hlen(KEYS.plans) == 0 and await r.hlen(KEYS.held) == 0


async def test_expired_mutes_end_once_each(backend: Backend) -> None:
    a, b = SubscriptionStore(backend.client(), KEYS), SubscriptionStore(backend.client(), KEYS)
    await a.mute(mute("C1", "pg-*", hours=-1))
    await a.mute(mute("C1", "stripe", hours=1))
    await held_back(backend.client(), EventKind.FAILED)
    mutes = (await a.table()).mutes
    first = await a.end_expired(NOW, mutes)
    second = await b.end_expired(NOW, mutes)  # another replica, the same pass
    assert [e.failures for e in first] == [1] and second == []
    assert [m.target.value for m in (await a.table()).mutes] == ["stripe"]
    assert await backend.client().xlen(KEYS.outbox) == 1
