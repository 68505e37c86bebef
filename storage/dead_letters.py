"""The dead-letter stream, for operators: list what could not be delivered, and replay it.

A replay puts the event back in the outbox as a new entry and forgets the dead-lettered
delivery record of that (event, channel), in one MULTI per letter; records of channels that
did get the alert stay `sent`, so a replay never posts to them twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.typing import EncodableT

from storage.delivery import DeliveryState, parse_entries, parse_record, record_field
from storage.keys import Keys


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    event_id: str
    event: str  # the JobEvent JSON, as the outbox held it ("" when the entry was malformed)
    channel: str
    reason: str
    detail: str
    at: str


class DeadLetters:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def read(self, count: int = 100) -> list[DeadLetter]:
        """The oldest `count` letters."""
        rows = await self._redis.xrange(self._keys.dead_letter, "-", "+", count=count)
        return [
            DeadLetter(
                id=row.id,
                event_id=row.fields.get("event_id", ""),
                event=row.fields.get("event", ""),
                channel=row.fields.get("channel", ""),
                reason=row.fields.get("reason", ""),
                detail=row.fields.get("detail", ""),
                at=row.fields.get("at", ""),
            )
            for row in parse_entries(rows)
        ]

    async def replay(self, letters: list[DeadLetter]) -> int:
        """Send `letters` through the outbox again; return how many went back."""
        replayed = 0
        for letter in letters:
            if not letter.event or not letter.event_id:
                continue  # malformed: nothing to deliver
            field = record_field(letter.event_id, letter.channel)
            record = parse_record(await self._redis.hget(self._keys.delivery, field))
            async with self._redis.pipeline(transaction=True) as pipe:
                if record is not None and record.state is DeliveryState.DEAD_LETTERED:
                    pipe.hdel(self._keys.delivery, field)
                entry: dict[EncodableT, EncodableT] = {
                    "event_id": letter.event_id,
                    "event": letter.event,
                }
                pipe.xadd(self._keys.outbox, entry)
                pipe.xdel(self._keys.dead_letter, letter.id)
                await pipe.execute()
            replayed += 1
        return replayed
