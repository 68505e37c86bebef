"""storage.snapshots and storage.outbox (write side), on real Redis and on fakeredis."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from bot.alerts.diff import diff
from bot.domain.events import JobEvent
from bot.domain.models import Job
from bot.domain.snapshot import DiffResult, JobSnapshot
from bot.domain.states import StateClassifier
from storage.connection import Redis
from storage.keys import Keys
from storage.outbox import SEEN_EVENTS_RETENTION, Outbox
from storage.snapshots import SnapshotStore
from tests.fakes import make_job
from tests.redis_backends import Backend, count_round_trips

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
KEYS = Keys("tjb", "org_s")
CLASSIFIER = StateClassifier()


def job(job_id: str, state: str = "running", **fields: Any) -> Job:
    return Job.model_validate(make_job(job_id, state=state, **fields))


def failed(job_id: str, finished: datetime = NOW - timedelta(minutes=1)) -> Job:
    return job(job_id, "failed", finished_at=finished.isoformat(), message="boom")


def changes(previous: dict[str, JobSnapshot] | None, *jobs: Job) -> DiffResult:
    return diff(previous, list(jobs), NOW, org_id=KEYS.org_id, classifier=CLASSIFIER)


async def outbox_entries(r: Redis) -> list[dict[str, str]]:
    raw: Any = await r.xrange(KEYS.outbox)
    return [dict(fields) for _, fields in raw]


# --- snapshots --------------------------------------------------------------------------------


async def test_load_without_a_baseline_is_none(r: aioredis.Redis) -> None:
    assert await SnapshotStore(r, KEYS).load() is None


async def test_an_empty_baseline_loads_as_an_empty_dict(r: aioredis.Redis) -> None:
    await Outbox(r, KEYS).commit(changes(None), NOW)
    assert await SnapshotStore(r, KEYS).load() == {}
    assert await r.get(KEYS.baseline) == NOW.isoformat()


async def test_committed_snapshots_load_back(r: aioredis.Redis) -> None:
    result = changes(None, job("a"), failed("b"))
    await Outbox(r, KEYS).commit(result, NOW)
    assert await SnapshotStore(r, KEYS).load() == result.upserts


async def test_corrupt_snapshot_is_logged_and_treated_as_absent(
    r: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    result = changes(None, job("a"))
    await Outbox(r, KEYS).commit(result, NOW)
    await r.hset(KEYS.snapshot, mapping={"bad": "{not json", "worse": '{"state": 3}'})
    with caplog.at_level(logging.WARNING, logger="storage.snapshots"):
        loaded = await SnapshotStore(r, KEYS).load()
    assert loaded == result.upserts
    assert "corrupt snapshot org=org_s job='bad'" in caplog.text
    assert "job='worse'" in caplog.text


async def test_snapshots_without_the_marker_still_count_as_a_baseline(r: aioredis.Redis) -> None:
    result = changes(None, job("a"))
    await Outbox(r, KEYS).commit(result, NOW)
    await r.delete(KEYS.baseline)
    assert await SnapshotStore(r, KEYS).load() == result.upserts


async def test_load_is_one_round_trip(r: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    await Outbox(r, KEYS).commit(changes(None, *(job(f"j{i}") for i in range(300))), NOW)
    store = SnapshotStore(r, KEYS)
    await store.load()  # the connection exists and the script is loaded before counting
    trips = count_round_trips(monkeypatch)
    loaded = await store.load()
    assert loaded is not None
    assert len(loaded) == 300
    assert trips.count == 1


# --- outbox -----------------------------------------------------------------------------------


async def test_commit_enqueues_one_entry_per_event_with_exactly_two_fields(
    r: aioredis.Redis,
) -> None:
    result = changes({}, failed("a"), job("b", "done", finished_at=NOW.isoformat()), job("c"))
    committed = await Outbox(r, KEYS).commit(result, NOW)
    assert committed.enqueued == [e.event_id for e in result.events]
    assert committed.duplicates == 0
    entries = await outbox_entries(r)
    assert len(entries) == 2
    for fields, event in zip(entries, result.events, strict=True):
        assert set(fields) == {"event_id", "event"}
        assert fields["event_id"] == event.event_id
        assert JobEvent.model_validate_json(fields["event"]) == event
    scored: Any = await r.zrange(KEYS.seen_events, 0, -1, withscores=True)
    seen = dict(scored)
    assert seen == {e.event_id: NOW.timestamp() for e in result.events}


async def test_commit_writes_snapshots_and_removals(r: aioredis.Redis) -> None:
    outbox = Outbox(r, KEYS)
    await outbox.commit(changes(None, job("a"), job("b")), NOW)
    stale = {
        "a": JobSnapshot.of(job("a"), CLASSIFIER.classify(job("a")), NOW - timedelta(days=1)),
        "b": JobSnapshot.of(job("b"), CLASSIFIER.classify(job("b")), NOW),
    }
    result = changes(stale, job("b", "running", rows_emitted=5), failed("c"))
    assert result.removals == ["a"]
    await outbox.commit(result, NOW)
    loaded = await SnapshotStore(r, KEYS).load()
    assert loaded is not None
    assert set(loaded) == {"b", "c"}
    assert loaded["c"].state == "failed"
    assert await r.get(KEYS.baseline) == NOW.isoformat()


async def test_the_baseline_marker_keeps_its_first_time(r: aioredis.Redis) -> None:
    outbox = Outbox(r, KEYS)
    await outbox.commit(changes(None), NOW)
    await outbox.commit(changes({}), NOW + timedelta(hours=1))
    assert await r.get(KEYS.baseline) == NOW.isoformat()


async def test_committing_the_same_events_again_enqueues_nothing(r: aioredis.Redis) -> None:
    outbox = Outbox(r, KEYS)
    result = changes({}, failed("a"), failed("b"))
    await outbox.commit(result, NOW)
    again = await outbox.commit(result, NOW + timedelta(seconds=15))
    assert again.enqueued == []
    assert again.duplicates == 2
    assert await r.xlen(KEYS.outbox) == 2


async def test_racing_replicas_enqueue_each_event_once(backend: Backend) -> None:
    result = changes({}, *(failed(f"j{i}") for i in range(20)))
    outboxes = [Outbox(backend.client(), KEYS) for _ in range(3)]
    committed = await asyncio.gather(*(o.commit(result, NOW) for o in outboxes))
    enqueued = [event_id for c in committed for event_id in c.enqueued]
    assert sorted(enqueued) == sorted(e.event_id for e in result.events)
    assert sum(c.duplicates for c in committed) == 2 * 20
    r = backend.client()
    entries = await outbox_entries(r)
    assert sorted(f["event_id"] for f in entries) == sorted(enqueued)


async def test_seen_events_are_pruned_after_the_retention(r: aioredis.Redis) -> None:
    outbox = Outbox(r, KEYS)  # the default retention
    old = changes({}, failed("old"))
    await outbox.commit(old, NOW - SEEN_EVENTS_RETENTION - timedelta(seconds=1))
    edge = changes({}, failed("edge"))
    await outbox.commit(edge, NOW - SEEN_EVENTS_RETENTION)
    await outbox.commit(changes({}), NOW)
    remaining = await r.zrange(KEYS.seen_events, 0, -1)
    assert remaining == [edge.events[0].event_id]


async def test_a_shorter_retention_prunes_sooner(r: aioredis.Redis) -> None:
    outbox = Outbox(r, KEYS, retention=timedelta(hours=1))
    await outbox.commit(changes({}, failed("a")), NOW - timedelta(hours=2))
    await outbox.commit(changes({}), NOW)
    assert await r.zcard(KEYS.seen_events) == 0
    replay = await outbox.commit(changes({}, failed("a")), NOW)  # beyond retention: new again
    assert len(replay.enqueued) == 1


async def test_commit_does_not_trim_or_create_the_consumer_group(r: aioredis.Redis) -> None:
    await r.xgroup_create(KEYS.outbox, "notifier", id="0", mkstream=True)
    result = changes({}, failed("a"))
    await Outbox(r, KEYS).commit(result, NOW)
    read: Any = await r.xreadgroup("notifier", "c1", {KEYS.outbox: ">"}, count=10)
    [(_, entries)] = read
    assert [fields["event_id"] for _, fields in entries] == [result.events[0].event_id]
    groups: Any = await r.xinfo_groups(KEYS.outbox)
    assert [g["name"] for g in groups] == ["notifier"]


async def test_large_commit_has_no_argument_limit(r: aioredis.Redis) -> None:
    jobs = [failed(f"j{i}") for i in range(5000)]
    committed = await Outbox(r, KEYS).commit(changes({}, *jobs), NOW)
    assert len(committed.enqueued) == 5000
    assert await r.hlen(KEYS.snapshot) == 5000
    assert await r.xlen(KEYS.outbox) == 5000


@pytest.mark.parametrize("size", [10, 1000])
async def test_commit_is_one_round_trip_whatever_its_size(
    r: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    outbox = Outbox(r, KEYS)
    await outbox.commit(changes(None), NOW)  # loads the script and opens the connection
    trips = count_round_trips(monkeypatch)
    committed = await outbox.commit(changes({}, *(failed(f"j{i}") for i in range(size))), NOW)
    assert len(committed.enqueued) == size
    assert trips.count == 1


async def test_commit_reloads_the_script_after_a_flush(r: aioredis.Redis) -> None:
    outbox = Outbox(r, KEYS)
    await outbox.commit(changes(None), NOW)
    await r.script_flush()
    committed = await outbox.commit(changes({}, failed("a")), NOW)
    assert len(committed.enqueued) == 1


def test_every_key_of_the_commit_shares_one_cluster_slot() -> None:
    keys = [KEYS.baseline, KEYS.snapshot, KEYS.seen_events, KEYS.outbox]
    assert len({key_slot(k.encode()) for k in keys}) == 1
