"""The read side of the outbox: the `notifier` consumer group, for one stable consumer name.

The outbox (`Keys.outbox`) is a STREAM whose entries hold `event_id` and `event` (the
JobEvent's JSON); `storage.outbox` writes it. The consumer name is the replica id, so a
restarted process reads its own pending entries (`read_pending`) at once. The replica that
holds the delivery lease `adopt()`s every entry other consumers still hold (they are dead or
stood down: only the lease holder delivers), then reads new ones (`read_new`). `finish()`
acknowledges and deletes entries and their plans in one script, so the stream's length is the
backlog.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from bot.domain.events import JobEvent
from storage.connection import Redis
from storage.keys import Keys
from storage.lua import script

GROUP = "notifier"

# KEYS: outbox, plans; ARGV: group, entry ids...
FINISH = """
local acked = 0
for i = 2, #ARGV do
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
return acked
"""

# KEYS: outbox
BACKLOG = script("""
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first = ''
if #oldest > 0 then first = oldest[1][1] end
return {redis.call('XLEN', KEYS[1]), first, now_ms()}
""")


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


def stream_order(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable (milliseconds, sequence)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class Backlog:
    length: int  # entries in the stream (finished ones are deleted)
    oldest_age: float  # seconds since the oldest entry was added, by Redis time; 0 when empty


def parse_entries(reply: Any) -> list[OutboxEntry]:
    """XREADGROUP / XRANGE / XCLAIM replies (RESP2 lists or RESP3 dicts) -> entries."""
    if isinstance(reply, dict):
        reply = list(reply.items())
    rows: list[Any] = []
    for item in reply or []:
        if isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[1], list):
            rows += item[1]  # [stream, [(id, fields), ...]]
        else:
            rows.append(item)
    return [OutboxEntry(id=str(i), fields=dict(f or {})) for i, f in rows]


class OutboxConsumer:
    def __init__(self, redis: Redis, keys: Keys, *, consumer: str, group: str = GROUP) -> None:
        self._redis = redis
        self._keys = keys
        self.consumer = consumer
        self.group = group
        self._finish = redis.register_script(FINISH)
        self._backlog = redis.register_script(BACKLOG)

    async def ensure_group(self) -> None:
        """XGROUP CREATE <outbox> notifier 0 MKSTREAM; an existing group is fine."""
        try:
            await self._redis.xgroup_create(self._keys.outbox, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_pending(self, *, page: int = 100, limit: int = 1000) -> list[OutboxEntry]:
        """This consumer's own pending entries, oldest first (up to `limit`)."""
        entries: list[OutboxEntry] = []
        last = "0"
        while len(entries) < limit:
            want = min(page, limit - len(entries))
            reply = await self._redis.xreadgroup(
                self.group, self.consumer, {self._keys.outbox: last}, count=want
            )
            got = parse_entries(reply)
            entries += got
            if len(got) < want:
                break
            last = got[-1].id
        return entries

    async def read_new(self, count: int, *, block_ms: int | None) -> list[OutboxEntry]:
        """Entries no consumer has read yet; `block_ms` waits for some when there are none."""
        reply = await self._redis.xreadgroup(
            self.group, self.consumer, {self._keys.outbox: ">"}, count=count, block=block_ms
        )
        return parse_entries(reply)

    async def pending_by_consumer(self) -> dict[str, int]:
        summary: Any = await self._redis.xpending(self._keys.outbox, self.group)
        return {str(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []}

    async def adopt(self, *, page: int = 500) -> int:
        """Take every entry other consumers hold (only the lease holder delivers, so theirs
        are orphans: a dead replica's, or one that stood down). Returns how many."""
        adopted = 0
        for name, count in (await self.pending_by_consumer()).items():
            if name == self.consumer or count <= 0:
                continue
            while True:
                rows: Any = await self._redis.xpending_range(
                    self._keys.outbox, self.group, "-", "+", page, consumername=name
                )
                ids: list[int | bytes | str | memoryview[int]] = [
                    str(row["message_id"]) for row in rows
                ]
                if not ids:
                    break
                await self._redis.xclaim(
                    self._keys.outbox, self.group, self.consumer, 0, ids, justid=True
                )
                adopted += len(ids)
                if len(ids) < page:
                    break
        return adopted

    async def finish(self, entry_ids: Sequence[str]) -> int:
        """XACK + XDEL each entry and drop its plan, atomically: the entry is done."""
        if not entry_ids:
            return 0
        keys = [self._keys.outbox, self._keys.plans]
        return int(await self._finish(keys=keys, args=[self.group, *entry_ids]))

    async def backlog(self) -> Backlog:
        length, first, now = await self._backlog(keys=[self._keys.outbox], args=[])
        if not first:
            return Backlog(length=int(length), oldest_age=0.0)
        age = max(int(now) - OutboxEntry(id=str(first), fields={}).millis, 0) / 1000
        return Backlog(length=int(length), oldest_age=age)

    async def prune_consumers(self, *, idle_ms: int) -> int:
        """Forget consumers (replicas gone for good) with nothing pending, idle that long."""
        consumers: Any = await self._redis.xinfo_consumers(self._keys.outbox, self.group)
        removed = 0
        for c in consumers:
            if c["name"] != self.consumer and int(c["pending"]) == 0 and int(c["idle"]) > idle_ms:
                await self._redis.xgroup_delconsumer(self._keys.outbox, self.group, c["name"])
                removed += 1
        return removed
