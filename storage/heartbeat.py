"""The poller's heartbeat: when the org was last polled successfully (for /readyz).

One STRING per org (`Keys.last_poll`) holding an ISO timestamp, with a TTL so a bot that is
gone leaves nothing behind; a missing or unreadable value reads as "never". The poller
writes it inside its commit (`storage.outbox`); `record_poll` is for the rest.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from storage.connection import Redis
from storage.keys import Keys

log = logging.getLogger(__name__)

HEARTBEAT_TTL = timedelta(days=1)


async def record_poll(
    redis: Redis, keys: Keys, now: datetime, *, ttl: timedelta = HEARTBEAT_TTL
) -> None:
    await redis.set(keys.last_poll, now.isoformat(), px=int(ttl.total_seconds() * 1000))


async def last_poll(redis: Redis, keys: Keys) -> datetime | None:
    raw = await redis.get(keys.last_poll)
    if raw is None:
        return None
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        log.warning("ignoring unreadable poll heartbeat org=%s: %r", keys.org_id, text[:64])
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
