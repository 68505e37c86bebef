"""The read side of the outbox: the `notifier` consumer group, delivery records, channel gates.

The outbox (`Keys.outbox`) is a STREAM whose entries hold `event_id` and `event` (the
JobEvent's JSON); `storage.outbox` writes it. Here:

- `read()`: this consumer's own pending entries first (XREADGROUP id 0, paged), then new ones
  (`>`), with COUNT and an optional short BLOCK; `reclaim()`: XAUTOCLAIM entries a dead
  consumer left idle; `ack_and_delete()`: XACK + XDEL in one MULTI, so the stream's length is
  the backlog; `dead_letter()`: XADD to `Keys.dead_letter`, capped (MAXLEN ~).
- Delivery records (HASH `Keys.delivery`, field `event_id|channel`, a `DeliveryRecord` JSON):
  `claim()` marks deliveries in flight *before* a post (WATCH/MULTI, so two consumers never
  both believe they own one), `mark()` records the outcome; records outlive the entry (a
  consumer that reclaimed an entry another one just finished sees `sent`) and are pruned by
  age.
- Channel gates: `acquire_gate()` (SET PX NX: one post per interval per channel across
  replicas) and `pause()` (from a 429's Retry-After or a retry back-off; the channel waits
  while the key exists). Times are the Redis server's, shared by every replica.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, ValidationError
from redis.exceptions import ResponseError, WatchError
from redis.typing import EncodableT

from bot.domain.events import JobEvent
from bot.domain.models import Timestamp
from storage.keys import Keys

GROUP = "notifier"
DEAD_LETTER_MAXLEN = 10_000
CLAIM_ATTEMPTS = 5
IN_FLIGHT_RETENTION_FACTOR = 10
# Extend a pause, never shorten it. A script because `PEXPIRE ... GT` needs Redis 7.0 and the
# bot supports 6.2.
PAUSE_LUA = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
"""

Pair = tuple[str, str]  # (event id, channel)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One stream entry. `fields` is empty when the entry was deleted while still pending."""

    id: str
    fields: Mapping[str, str]

    @property
    def event_id(self) -> str | None:
        return self.fields.get("event_id")

    def event(self) -> JobEvent:
        """The event; raises ValueError (pydantic's ValidationError) or KeyError when malformed."""
        return JobEvent.model_validate_json(self.fields["event"])

    @property
    def millis(self) -> int:
        return int(self.id.split("-", 1)[0])


class DeliveryState(StrEnum):
    IN_FLIGHT = "in_flight"  # a post may have happened: verify before posting again
    SENT = "sent"
    DEAD_LETTERED = "dead_lettered"


class DeliveryRecord(BaseModel):
    """What we know about delivering one event to one channel."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    state: DeliveryState
    at: Timestamp  # when this state began (in flight: the FIRST attempt)
    ts: str | None = None  # the Slack message's ts, once sent
    attempt_at: Timestamp | None = None  # in flight: the latest attempt
    consumer: str | None = None
    replies: int = 0  # thread replies posted under the message so far
    replies_due: int = 0  # thread replies the message needs (the rest of a long error)

    @property
    def final(self) -> bool:
        return self.state is not DeliveryState.IN_FLIGHT

    @property
    def done(self) -> bool:
        """Nothing left to do for this (event, channel): the entry may be acknowledged."""
        return self.state is DeliveryState.DEAD_LETTERED or (
            self.state is DeliveryState.SENT and self.replies >= self.replies_due
        )


class Claim(StrEnum):
    NEW = "new"  # no earlier attempt: post
    RETRY = "retry"  # an earlier attempt may have posted: look for it first
    BUSY = "busy"  # another live consumer is on it: leave it
    DONE = "done"  # sent or dead-lettered already


@dataclass(frozen=True, slots=True)
class Backlog:
    length: int  # entries in the stream (acknowledged ones are deleted)
    oldest_age: float  # seconds since the oldest entry was added; 0 when empty


def record_field(event_id: str, channel: str) -> str:
    return f"{event_id}|{channel}"


def parse_record(raw: str | bytes | None) -> DeliveryRecord | None:
    if raw is None:
        return None
    try:
        return DeliveryRecord.model_validate_json(raw)
    except ValidationError:
        return None


def parse_entries(reply: Any) -> list[OutboxEntry]:
    """XREADGROUP / XRANGE / XAUTOCLAIM replies (RESP2 lists or RESP3 dicts) -> entries."""
    if isinstance(reply, dict):
        reply = list(reply.items())
    rows: list[Any] = []
    for item in reply or []:
        if isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[1], list):
            rows += item[1]  # [stream, [(id, fields), ...]]
        else:
            rows.append(item)
    return [OutboxEntry(id=str(i), fields=dict(f or {})) for i, f in rows]


class DeliveryStore:
    """The notifier's side of the outbox stream and its bookkeeping, for one consumer."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        consumer: str,
        group: str = GROUP,
        reclaim_idle: float = 30.0,
        dead_letter_maxlen: int = DEAD_LETTER_MAXLEN,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.consumer = consumer
        self.group = group
        self.reclaim_idle = reclaim_idle
        self._dead_letter_maxlen = dead_letter_maxlen
        self._claim_cursor = "0-0"
        # Serialises this process's writes to the records hash, so the WATCH in `claim()`
        # only ever conflicts with other replicas, not with our own concurrent channels.
        self._records_lock = asyncio.Lock()
        self._pause = redis.register_script(PAUSE_LUA)

    # --- the stream ------------------------------------------------------------------------
    async def ensure_group(self) -> None:
        """XGROUP CREATE <outbox> notifier 0 MKSTREAM; an existing group is fine."""
        try:
            await self._redis.xgroup_create(self._keys.outbox, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(
        self, count: int, *, block: float | None = None, max_pending: int = 1000
    ) -> list[OutboxEntry]:
        """Own pending entries first (up to `max_pending`), then up to `count` new ones.

        `block` (seconds) waits for new entries only when nothing is pending, so deferred
        work is never held up by the wait.
        """
        key, redis = self._keys.outbox, self._redis
        entries: list[OutboxEntry] = []
        last = "0"
        while len(entries) < max_pending:
            want = min(count, max_pending - len(entries))
            reply = await redis.xreadgroup(self.group, self.consumer, {key: last}, count=want)
            page = parse_entries(reply)
            entries += page
            if len(page) < want:
                break
            last = page[-1].id
        if len(entries) >= max_pending:
            return entries
        wait = int(block * 1000) if block and not entries else None
        new = await redis.xreadgroup(self.group, self.consumer, {key: ">"}, count=count, block=wait)
        return entries + parse_entries(new)

    async def reclaim(self, count: int) -> list[OutboxEntry]:
        """Take over entries idle for `reclaim_idle` s (their consumer is presumably dead)."""
        reply = await self._redis.xautoclaim(
            self._keys.outbox,
            self.group,
            self.consumer,
            min_idle_time=max(int(self.reclaim_idle * 1000), 0),
            start_id=self._claim_cursor,
            count=count,
        )
        cursor, claimed = str(reply[0]), parse_entries(reply[1])
        deleted = [str(i) for i in (reply[2] if len(reply) > 2 else [])]
        self._claim_cursor = cursor
        if deleted:  # deleted while pending: nothing left to deliver
            await self._redis.xack(self._keys.outbox, self.group, *deleted)
        return claimed

    async def pending_of_others(self, up_to: str, count: int = 1000) -> list[OutboxEntry]:
        """Entries up to id `up_to` that other consumers still hold (for per-channel order)."""
        key = self._keys.outbox
        pending = await self._redis.xpending_range(key, self.group, "-", up_to, count)
        ids = [str(p["message_id"]) for p in pending if p["consumer"] != self.consumer]
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(key, entry_id, entry_id)
            replies = await pipe.execute()
        return [e for reply in replies for e in parse_entries(reply)]

    async def ack_and_delete(self, ids: Sequence[str]) -> int:
        """XACK + XDEL in one MULTI: the entry is done, and the stream length stays the backlog."""
        if not ids:
            return 0
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self._keys.outbox, self.group, *ids)
            pipe.xdel(self._keys.outbox, *ids)
            acked, _ = await pipe.execute()
        return int(acked)

    async def dead_letter(
        self, entry: OutboxEntry, channel: str, reason: str, *, detail: str = "", now: datetime
    ) -> str:
        """Keep an undeliverable (entry, channel) in the capped dead-letter stream."""
        fields: dict[EncodableT, EncodableT] = {
            "entry_id": entry.id,
            "event_id": entry.event_id or "",
            "event": entry.fields.get("event", ""),
            "channel": channel,
            "reason": reason,
            "detail": detail[:2000],
            "consumer": self.consumer,
            "at": now.isoformat(),
        }
        entry_id = await self._redis.xadd(
            self._keys.dead_letter, fields, maxlen=self._dead_letter_maxlen, approximate=True
        )
        return str(entry_id)

    async def backlog(self) -> Backlog:
        """Stream length and the age of its oldest entry, by the Redis server's clock."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self._keys.outbox)
            pipe.xrange(self._keys.outbox, "-", "+", count=1)
            pipe.time()
            length, oldest, (secs, micros) = await pipe.execute()
        entries = parse_entries(oldest)
        if not entries:
            return Backlog(length=int(length), oldest_age=0.0)
        now_ms = int(secs) * 1000 + int(micros) // 1000
        return Backlog(length=int(length), oldest_age=max(now_ms - entries[0].millis, 0) / 1000)

    async def prune_consumers(self, idle: float) -> int:
        """Forget consumers (dead replicas) with nothing pending, idle for `idle` seconds."""
        consumers = await self._redis.xinfo_consumers(self._keys.outbox, self.group)
        removed = 0
        for c in consumers:
            if c["name"] != self.consumer and int(c["pending"]) == 0 and c["idle"] > idle * 1000:
                removed += 1
                await self._redis.xgroup_delconsumer(self._keys.outbox, self.group, c["name"])
        return removed

    # --- delivery records ------------------------------------------------------------------
    async def records(self, pairs: Iterable[Pair]) -> dict[Pair, DeliveryRecord]:
        wanted = list(dict.fromkeys(pairs))
        if not wanted:
            return {}
        raw = await self._redis.hmget(self._keys.delivery, [record_field(*p) for p in wanted])
        found = {p: parse_record(r) for p, r in zip(wanted, raw, strict=True)}
        return {p: r for p, r in found.items() if r is not None}

    async def claim(
        self, pairs: Sequence[Pair], *, now: datetime, lease: timedelta
    ) -> dict[Pair, tuple[Claim, DeliveryRecord | None]]:
        """Mark `pairs` in flight for this consumer, atomically with reading what was there.

        In flight by another consumer within `lease` -> BUSY; sent / dead-lettered -> DONE;
        in flight otherwise -> RETRY (keeping the first attempt's time for the history check);
        nothing -> NEW. Contention on the hash -> BUSY (tried again next batch).
        """
        async with self._records_lock:
            return await self._claim(pairs, now, lease)

    async def _claim(
        self, pairs: Sequence[Pair], now: datetime, lease: timedelta
    ) -> dict[Pair, tuple[Claim, DeliveryRecord | None]]:
        key, fields = self._keys.delivery, [record_field(*p) for p in pairs]
        for _ in range(CLAIM_ATTEMPTS):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hmget(key, fields) if fields else []
                    result, updates = self._decide(pairs, raw, now, lease)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if updates:
                        pipe.hset(key, mapping=updates)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue
        return {p: (Claim.BUSY, None) for p in pairs}

    def _decide(
        self,
        pairs: Sequence[Pair],
        raw: Sequence[str | bytes | None],
        now: datetime,
        lease: timedelta,
    ) -> tuple[dict[Pair, tuple[Claim, DeliveryRecord | None]], dict[EncodableT, EncodableT]]:
        result: dict[Pair, tuple[Claim, DeliveryRecord | None]] = {}
        updates: dict[EncodableT, EncodableT] = {}
        for pair, value in zip(pairs, raw, strict=True):
            old = parse_record(value)
            if old is not None and old.final:
                result[pair] = (Claim.DONE, old)
                continue
            if old is not None and old.consumer != self.consumer:
                last = old.attempt_at or old.at
                if now - last < lease:
                    result[pair] = (Claim.BUSY, old)
                    continue
            if old is None and value is not None:  # unreadable: assume an attempt a day ago
                old = DeliveryRecord(state=DeliveryState.IN_FLIGHT, at=now - timedelta(days=1))
            first = old.at if old is not None else now
            record = DeliveryRecord(
                state=DeliveryState.IN_FLIGHT, at=first, attempt_at=now, consumer=self.consumer
            )
            result[pair] = (Claim.NEW if old is None else Claim.RETRY, record)
            updates[record_field(*pair)] = record.model_dump_json()
        return result, updates

    async def mark(self, records: Mapping[Pair, DeliveryRecord]) -> None:
        if records:
            mapping: dict[EncodableT, EncodableT] = {
                record_field(*p): r.model_dump_json() for p, r in records.items()
            }
            async with self._records_lock:
                await self._redis.hset(self._keys.delivery, mapping=mapping)

    async def forget(self, pairs: Iterable[Pair]) -> None:
        """Drop in-flight records of attempts known not to have posted (Slack said no)."""
        fields = [record_field(*p) for p in pairs]
        if fields:
            async with self._records_lock:
                await self._redis.hdel(self._keys.delivery, *fields)

    async def prune_records(self, *, now: datetime, max_age: timedelta) -> int:
        """Delete final records older than `max_age`, and unreadable ones.

        An in-flight record guards an entry that may still be pending (a long outage): it is
        kept ten times longer, only to clear leftovers of entries deleted by hand.
        """
        stale: list[str] = []
        async for name, value in self._redis.hscan_iter(self._keys.delivery, count=500):
            record = parse_record(value)
            if record is None:
                stale.append(name)
                continue
            last = record.attempt_at or record.at
            if now - last > (max_age if record.final else max_age * IN_FLIGHT_RETENTION_FACTOR):
                stale.append(name)
        for start in range(0, len(stale), 500):
            await self._redis.hdel(self._keys.delivery, *stale[start : start + 500])
        return len(stale)

    # --- channel gates ---------------------------------------------------------------------
    async def acquire_gate(self, channel: str, interval: float) -> bool:
        """At most one post per `interval` seconds per channel, across replicas."""
        if interval <= 0:
            return True
        ms = max(math.ceil(interval * 1000), 1)
        return bool(await self._redis.set(self._keys.channel_gate(channel), "1", px=ms, nx=True))

    async def pause(self, channel: str, seconds: float) -> None:
        """The channel waits `seconds` (never shortening a longer pause already set)."""
        ms = max(math.ceil(seconds * 1000), 1)
        await self._pause(keys=[self._keys.channel_pause(channel)], args=[ms])

    async def pause_left(self, channel: str) -> float:
        """Seconds the channel still waits (0 when it may post)."""
        ms = await self._redis.pttl(self._keys.channel_pause(channel))
        return max(int(ms), 0) / 1000
