"""Subscriptions and mutes, as channels set them from Slack, under the org's hash tag.

- `Keys.subscriptions`: HASH `{channel}|{target}` -> Subscription JSON.
- `Keys.mutes`: HASH `{channel}|{target}` -> Mute JSON.
- `Keys.held`: HASH `{channel}|{target}|failures|successes|others` -> counts, and
  `{channel}|{target}|last` -> the last failure held back (JSON): what a mute kept out. The
  counts are written with the plan that held the event back (`storage.plans`), so a
  re-planned entry never counts twice.

Values are validated on read: an unreadable one is logged and left out. Each channel holds at
most `limit` subscriptions and `limit` mutes. `end_mute()` is one script: it deletes the
mute, takes what it held back and, when that is anything, adds the summary to the outbox as a
notice, so it is posted exactly once by the delivery core whether the mute expired or was
lifted, and whichever replica ended it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from bot.domain.notices import MuteEnd
from bot.domain.subscriptions import Mute, Subscription, Target
from storage.connection import Redis
from storage.keys import Keys
from storage.lua import script

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 200
TALLIES = ("failures", "successes", "others")

# KEYS: subscriptions, mutes -> both hashes, flat
LOAD = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""

# KEYS: hash; ARGV: channel, field, value JSON, limit -> 'added' | 'replaced' | 'limit'
PUT = """
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  return 'replaced'
end
local prefix = ARGV[1] .. '|'
local count = 0
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, #prefix) == prefix then count = count + 1 end
end
if count >= tonumber(ARGV[4]) then return 'limit' end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 'added'
"""

# KEYS: mutes, held, outbox; ARGV: channel, target, reason, by
# -> {ended (0|1), failures, successes, others, last failure JSON}
END_MUTE = script("""
local field = ARGV[1] .. '|' .. ARGV[2]
if redis.call('HDEL', KEYS[1], field) == 0 then return {0, 0, 0, 0, ''} end
local p = field .. '|'
local failures = tonumber(redis.call('HGET', KEYS[2], p .. 'failures') or '0')
local successes = tonumber(redis.call('HGET', KEYS[2], p .. 'successes') or '0')
local others = tonumber(redis.call('HGET', KEYS[2], p .. 'others') or '0')
local last = redis.call('HGET', KEYS[2], p .. 'last') or ''
redis.call('HDEL', KEYS[2], p .. 'failures', p .. 'successes', p .. 'others', p .. 'last')
if failures + successes + others > 0 then
  local now = now_ms()
  local notice = cjson.encode({kind = 'mute_summary', channel = ARGV[1], target = ARGV[2],
    reason = ARGV[3], ended_at = now, failures = failures, successes = successes,
    others = others, last_failure = last, by = ARGV[4]})
  local id = 'notice:mute:' .. ARGV[1] .. ':' .. ARGV[2] .. ':' .. now
  redis.call('XADD', KEYS[3], '*', 'event_id', id, 'notice', notice)
end
return {1, failures, successes, others, last}
""")


class Put(StrEnum):
    ADDED = "added"
    REPLACED = "replaced"
    LIMIT = "limit"


@dataclass(frozen=True, slots=True)
class Ended:
    """What `end_mute` found: whether there was a mute, and what it held back."""

    ended: bool
    failures: int = 0
    successes: int = 0
    others: int = 0
    last_failure: str = ""

    @property
    def total(self) -> int:
        return self.failures + self.successes + self.others


@dataclass(frozen=True, slots=True)
class RoutingTable:
    subscriptions: list[Subscription]
    mutes: list[Mute]


def field_of(channel: str, target: Target | str) -> str:
    return f"{channel}|{target.value if isinstance(target, Target) else target}"


def held_field(channel: str, target: str, tally: str) -> str:
    return f"{channel}|{target}|{tally}"


def _parse(kind: type[Subscription] | type[Mute], flat: list[Any]) -> list[Any]:
    found = []
    for name, raw in zip(flat[::2], flat[1::2], strict=True):
        try:
            found.append(kind.model_validate_json(raw))
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]["msg"]
            log.warning("ignoring an unreadable %s %r: %s", kind.__name__.lower(), name, first)
    return sorted(found, key=lambda item: (item.channel, item.target.value))


class SubscriptionStore:
    def __init__(self, redis: Redis, keys: Keys, *, limit: int = DEFAULT_LIMIT) -> None:
        self._redis = redis
        self._keys = keys
        self.limit = limit
        self._load = redis.register_script(LOAD)
        self._put = redis.register_script(PUT)
        self._end_mute = redis.register_script(END_MUTE)

    async def table(self) -> RoutingTable:
        """Every subscription and mute, in one round trip (sorted by channel, then target)."""
        subs, mutes = await self._load(keys=[self._keys.subscriptions, self._keys.mutes], args=[])
        return RoutingTable(subscriptions=_parse(Subscription, subs), mutes=_parse(Mute, mutes))

    async def subscribe(self, sub: Subscription) -> Put:
        """Add or replace the channel's subscription to `sub.target`."""
        return await self._put_one(self._keys.subscriptions, sub.channel, sub.target, sub)

    async def unsubscribe(self, channel: str, target: Target) -> bool:
        return bool(await self._redis.hdel(self._keys.subscriptions, field_of(channel, target)))

    async def mute(self, mute: Mute) -> Put:
        """Add a mute, or move an existing one's end (what it held back so far stays)."""
        return await self._put_one(self._keys.mutes, mute.channel, mute.target, mute)

    async def end_mute(
        self, channel: str, target: Target | str, reason: MuteEnd, *, by: str = ""
    ) -> Ended:
        value = target.value if isinstance(target, Target) else target
        k = self._keys
        reply: list[Any] = await self._end_mute(
            keys=[k.mutes, k.held, k.outbox], args=[channel, value, reason.value, by]
        )
        ended, failures, successes, others, last = reply
        return Ended(bool(int(ended)), int(failures), int(successes), int(others), str(last))

    async def end_expired(self, now: datetime, mutes: Iterable[Mute]) -> list[Ended]:
        """End the mutes that are over by `now` (each once, whoever else tries)."""
        ended = []
        for mute in mutes:
            if mute.until <= now:
                done = await self.end_mute(mute.channel, mute.target, MuteEnd.EXPIRED)
                if done.ended:
                    ended.append(done)
        return ended

    async def _put_one(
        self, key: str, channel: str, target: Target, value: Subscription | Mute
    ) -> Put:
        reply = await self._put(
            keys=[key],
            args=[channel, field_of(channel, target), value.model_dump_json(), self.limit],
        )
        return Put(str(reply))
