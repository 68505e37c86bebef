"""storage.lease (poller lease) and storage.heartbeat, on real Redis and on fakeredis."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from storage.heartbeat import HEARTBEAT_TTL, last_poll, record_poll
from storage.keys import Keys
from storage.lease import PollerLease
from tests.redis_backends import Backend

KEYS = Keys("tjb", "org_l")
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


# --- lease ------------------------------------------------------------------------------------


async def test_one_holder_at_a_time_and_the_holder_renews(backend: Backend) -> None:
    a = PollerLease(backend.client(), KEYS, holder="replica-a", ttl=30)
    b = PollerLease(backend.client(), KEYS, holder="replica-b", ttl=30)
    assert await a.acquire_or_renew() is True
    assert await b.acquire_or_renew() is False
    assert await a.acquire_or_renew() is True  # renewal
    assert await b.acquire_or_renew() is False
    assert await b.current_holder() == "replica-a"


async def test_renewal_resets_the_ttl(r: aioredis.Redis) -> None:
    lease = PollerLease(r, KEYS, holder="replica-a", ttl=30)
    assert await lease.acquire_or_renew()
    await r.pexpire(KEYS.poller_lease, 1000)  # as if most of the TTL had passed
    assert await lease.acquire_or_renew()
    ttl_ms = await r.pttl(KEYS.poller_lease)
    assert 1000 < ttl_ms <= 30_000


async def test_takeover_after_the_holder_stops_renewing(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    ttl = 0.3
    a = PollerLease(backend.client(), KEYS, holder="replica-a", ttl=ttl)
    b = PollerLease(backend.client(), KEYS, holder="replica-b", ttl=ttl)
    assert await a.acquire_or_renew()
    assert await b.acquire_or_renew() is False
    # a "dies": it stops renewing. b keeps trying, as its poll loop would, until it leads.
    deadline = time.monotonic() + 5
    while not await b.acquire_or_renew():
        assert time.monotonic() < deadline, "the lease was never taken over"
        await asyncio.sleep(0.02)
    assert await b.current_holder() == "replica-b"
    # a comes back: it has lost the lease and says so, and cannot take it from b
    with caplog.at_level(logging.WARNING, logger="storage.lease"):
        assert await a.acquire_or_renew() is False
    assert "poller lease lost org=org_l holder=replica-a" in caplog.text
    assert await b.acquire_or_renew() is True


async def test_release_hands_over_at_once(backend: Backend) -> None:
    a = PollerLease(backend.client(), KEYS, holder="replica-a", ttl=60)
    b = PollerLease(backend.client(), KEYS, holder="replica-b", ttl=60)
    assert await a.acquire_or_renew()
    await a.release()
    assert await a.current_holder() is None
    assert await b.acquire_or_renew() is True


async def test_release_never_frees_someone_elses_lease(backend: Backend) -> None:
    a = PollerLease(backend.client(), KEYS, holder="replica-a", ttl=60)
    b = PollerLease(backend.client(), KEYS, holder="replica-b", ttl=60)
    await b.release()  # never held: nothing happens
    assert await a.acquire_or_renew()
    await b.release()
    assert await b.current_holder() == "replica-a"
    await backend.client().delete(KEYS.poller_lease)  # a's lease expires ...
    assert await b.acquire_or_renew()  # ... and b takes it
    await a.release()  # a's stale release leaves b's lease alone
    assert await a.current_holder() == "replica-b"


async def test_a_lease_needs_a_positive_ttl(r: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="positive TTL"):
        PollerLease(r, KEYS, holder="x", ttl=0)


# --- heartbeat --------------------------------------------------------------------------------


async def test_no_heartbeat_reads_as_never(r: aioredis.Redis) -> None:
    assert await last_poll(r, KEYS) is None


async def test_heartbeat_round_trips_and_expires(r: aioredis.Redis) -> None:
    await record_poll(r, KEYS, NOW)
    assert await last_poll(r, KEYS) == NOW
    ttl_ms = await r.pttl(KEYS.last_poll)
    assert 0 < ttl_ms <= HEARTBEAT_TTL.total_seconds() * 1000
    await record_poll(r, KEYS, NOW + timedelta(seconds=15), ttl=timedelta(seconds=5))
    assert await last_poll(r, KEYS) == NOW + timedelta(seconds=15)
    assert 0 < await r.pttl(KEYS.last_poll) <= 5000


async def test_unreadable_heartbeat_is_logged_and_reads_as_never(
    r: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await r.set(KEYS.last_poll, "yesterday-ish")
    with caplog.at_level(logging.WARNING, logger="storage.heartbeat"):
        assert await last_poll(r, KEYS) is None
    assert "unreadable poll heartbeat org=org_l" in caplog.text


async def test_naive_heartbeat_is_taken_as_utc(r: aioredis.Redis) -> None:
    await r.set(KEYS.last_poll, "2025-03-01T12:00:00")
    assert await last_poll(r, KEYS) == NOW
