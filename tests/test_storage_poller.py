"""storage.snapshots and storage.outbox (write side), on real Redis and on fakeredis."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.alerts.diff import diff
from bot.domain.events import JobEvent
from bot.domain.models import Job
from bot.domain.snapshot import DiffResult, JobSnapshot
from bot.domain.states import StateClass, StateClassifier
from storage.connection import Redis
from storage.keys import Keys
from storage.outbox import SEEN_EVENTS_RETENTION, Outbox
from storage.snapshot_codec import BUCKETS, Decoder, LegacySnapshot, bucket_of, encode
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


def snap_of(j: Job) -> JobSnapshot:
    return JobSnapshot.of(j, CLASSIFIER.classify(j), NOW)


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
    bucket = KEYS.snapshot_bucket(bucket_of("bad"))
    await r.hset(bucket, mapping={"bad": "{not json", "worse": "x|1|2", "z": "fzz|||!|x"})
    with caplog.at_level(logging.WARNING, logger="storage.snapshots"):
        loaded = await SnapshotStore(r, KEYS).load()
    assert loaded == result.upserts
    assert "corrupt snapshot org=org_s job='bad'" in caplog.text
    assert "job='worse'" in caplog.text
    assert "job='z'" in caplog.text


async def test_snapshots_without_the_marker_still_count_as_a_baseline(r: aioredis.Redis) -> None:
    result = changes(None, job("a"))
    await Outbox(r, KEYS).commit(result, NOW)
    await r.delete(KEYS.baseline)
    assert await SnapshotStore(r, KEYS).load() == result.upserts


async def test_a_load_is_one_round_trip_fresh_or_warm(
    r: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await Outbox(r, KEYS).commit(changes(None, *(job(f"j{i}") for i in range(300))), NOW)
    warm = SnapshotStore(r, KEYS)  # the connection exists and both scripts are loaded
    await Outbox(r, KEYS, snapshots=warm).commit(changes(dict(await warm.load() or {})), NOW)
    await warm.load()
    trips = count_round_trips(monkeypatch)
    store = SnapshotStore(r, KEYS)
    loaded = await store.load()  # nothing held: every bucket, in one script
    assert loaded is not None and len(loaded) == 300
    assert trips.count == 1
    outbox = Outbox(r, KEYS, snapshots=store)
    await outbox.commit(
        changes(dict(loaded), job("j1", "failed", finished_at=NOW.isoformat())), NOW
    )
    trips.count = 0
    again = await store.load()  # held, and still what Redis holds: only the version is read
    assert trips.count == 1
    assert again is not None and again["j1"].state == "failed" and len(again) == 300
    assert dict(again) == await SnapshotStore(r, KEYS).load()


async def test_a_held_snapshot_gives_way_to_another_replicas_write(backend: Backend) -> None:
    a, b = SnapshotStore(backend.client(), KEYS), SnapshotStore(backend.client(), KEYS)
    outbox_a = Outbox(backend.client(), KEYS, snapshots=a)
    outbox_b = Outbox(backend.client(), KEYS, snapshots=b)
    assert await a.load() is None
    await outbox_a.commit(changes(None, job("x"), job("y")), NOW)
    held = await a.load()
    assert held is not None and set(held) == {"x", "y"}
    seen_by_b = await b.load()
    assert seen_by_b is not None
    await outbox_b.commit(changes(dict(seen_by_b), failed("x"), job("y")), NOW)
    now_a = await a.load()  # b replaced the version: a reads everything again
    assert now_a is not None and now_a["x"].state == "failed"
    # a's next commit was planned against a version that is gone: it writes, but trusts
    # nothing it holds afterwards
    await outbox_a.commit(changes(dict(now_a), failed("x"), job("y"), job("z")), NOW)
    assert set(await a.load() or {}) == {"x", "y", "z"}


async def test_a_flush_is_noticed_by_a_warm_store(r: aioredis.Redis) -> None:
    store = SnapshotStore(r, KEYS)
    await Outbox(r, KEYS, snapshots=store).commit(changes(None, job("a")), NOW)
    assert await store.load() is not None
    await r.flushdb()
    assert await store.load() is None


async def test_a_failed_commit_leaves_nothing_trusted(
    r: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(r, KEYS)
    outbox = Outbox(r, KEYS, snapshots=store)
    await outbox.commit(changes(None, job("a")), NOW)
    previous = await store.load()
    assert previous is not None

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("lost the answer")

    monkeypatch.setattr(outbox, "_script", broken)
    with pytest.raises(RedisConnectionError):
        await outbox.commit(changes(dict(previous), failed("a")), NOW)
    monkeypatch.undo()
    await r.hset(KEYS.snapshot_bucket(bucket_of("a")), "a", encode(snap_of(failed("a"))))
    again = await store.load()  # not the state held: what Redis holds
    assert again is not None and again["a"].state == "failed"


# --- the format before issue 11 ----------------------------------------------------------------


def as_legacy(snapshot: JobSnapshot) -> JobSnapshot:
    """What the old format keeps of a snapshot: not what issue 10 added."""
    return replace(snapshot, rows=None, progress_at=None, stalled=False, long_running=False)


def legacy_json(snapshot: JobSnapshot) -> str:
    """A snapshot as the bot stored it before issue 11 (pydantic's JSON of the model)."""
    return LegacySnapshot.model_validate(snapshot, from_attributes=True).model_dump_json()


async def test_legacy_snapshots_load_and_the_next_commit_migrates_them(r: aioredis.Redis) -> None:
    at = {"created_at": NOW.isoformat(), "updated_at": NOW.isoformat()}
    a, b = job("a", **at), job("b", "failed", finished_at=NOW.isoformat(), **at)
    old = changes(None, a, b, job("c", "queued", **at))
    await r.set(KEYS.baseline, NOW.isoformat())
    await r.hset(KEYS.snapshot, mapping={k: legacy_json(v) for k, v in old.upserts.items()})
    store = SnapshotStore(r, KEYS)
    loaded = await store.load()
    # The old format did not keep rows_emitted: it loads unknown, and the next poll learns it.
    assert loaded == {k: as_legacy(v) for k, v in old.upserts.items()}
    assert loaded is not None
    result = changes(dict(loaded), a, b, job("c", "running", **at))
    assert result.events == [] and set(result.upserts) == {"a", "b", "c"}
    await Outbox(r, KEYS, snapshots=store).commit(result, NOW)
    fresh = await SnapshotStore(r, KEYS).load()  # now from the new format alone
    assert fresh == {**old.upserts, **result.upserts}
    assert 0 < await r.ttl(KEYS.snapshot) <= 24 * 3600  # left to an old replica, for a day
    assert await r.get(KEYS.snapshot_version)


async def test_a_corrupt_legacy_snapshot_is_logged_and_left_out(
    r: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    good = changes(None, job("a")).upserts
    await r.hset(
        KEYS.snapshot, mapping={"a": legacy_json(good["a"]), "bad": "{not json", "worse": "{}"}
    )
    with caplog.at_level(logging.WARNING, logger="storage.snapshots"):
        assert await SnapshotStore(r, KEYS).load() == {"a": as_legacy(good["a"])}
    assert "corrupt snapshot org=org_s job='bad'" in caplog.text
    assert "job='worse'" in caplog.text


# --- the stored form ---------------------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    state=st.text(max_size=40),
    state_class=st.sampled_from(list(StateClass)),
    finished=st.none() | instants,
    started=st.none() | instants,
    updated=instants,
    seen=instants,
    rows=st.none() | st.integers(min_value=-(2**63), max_value=2**63),
    progress=st.none() | instants.map(lambda when: when.replace(microsecond=0)),
    stalled=st.booleans(),
    long_running=st.booleans(),
)
def test_a_stored_snapshot_decodes_to_an_equal_one(
    state: str,
    state_class: StateClass,
    finished: datetime | None,
    started: datetime | None,
    updated: datetime,
    seen: datetime,
    rows: int | None,
    progress: datetime | None,
    stalled: bool,
    long_running: bool,
) -> None:
    original = JobSnapshot(
        state, state_class, finished, started, updated, seen, rows, progress, stalled, long_running
    )
    value = encode(original)
    assert value.isascii() or not state.isascii()
    assert Decoder().decode(value) == original


@pytest.mark.parametrize(
    ("state", "state_class"),
    [
        ("in_progress", StateClass.ACTIVE),
        ("running", StateClass.ACTIVE),
        ("timed_out", StateClass.FAILED),
        ("succeeded", StateClass.SUCCEEDED),
        ("cancelled", StateClass.CANCELLED),
    ],
)
def test_every_realistic_stored_snapshot_fits_a_listpack_value(
    state: str, state_class: StateClass
) -> None:
    """Over 64 bytes, one value turns its whole bucket into a hash table for good."""
    when = datetime(2031, 6, 30, 23, 59, 59, 999999, tzinfo=UTC)  # long instants
    active = state_class is StateClass.ACTIVE
    worst = JobSnapshot(
        state,
        state_class,
        None if active else when,
        when,
        when,
        when,
        rows=10**10,  # ten billion rows
        progress_at=when.replace(microsecond=0) if active else None,
        stalled=active,
        long_running=active,
    )
    assert len(encode(worst).encode()) <= 64, encode(worst)


def test_a_value_of_the_format_before_hung_jobs_still_loads() -> None:
    old = "f" + "|".join(["hoo92ry800", "hoo8xtc6io", "hoo92ry800", "hoo92ry800", "failed"])
    snapshot = Decoder().decode(old)
    assert (snapshot.state, snapshot.state_class, snapshot.rows) == (
        "failed",
        StateClass.FAILED,
        None,
    )
    assert snapshot.progress_at is None and not snapshot.stalled
    assert Decoder().decode("a|hoo8xtc6io|hoo92ry800|hoo92ry800|a|b").state == "a|b"


def test_a_typical_stored_snapshot_fits_a_listpack_value() -> None:
    typical = snap_of(failed("job_01HZX3K4V6N8P9Q2R5S7T0W1Y3"))
    assert len(encode(typical).encode()) <= 64  # Redis' hash-max-listpack-value


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
    assert len(await SnapshotStore(r, KEYS).load() or {}) == 5000
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
    keys = [KEYS.baseline, KEYS.snapshot, KEYS.seen_events, KEYS.outbox, KEYS.last_poll]
    keys += [KEYS.snapshot_version, *(KEYS.snapshot_bucket(b) for b in range(BUCKETS))]
    assert len({key_slot(k.encode()) for k in keys}) == 1
