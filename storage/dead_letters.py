"""The dead-letter stream: actions that could not be delivered, for operators to see and replay.

One letter per action (`Keys.dead_letter`, capped with MAXLEN ~): the reason (Slack's error
code, `bot_error` for a quarantined action, `malformed` for an unreadable entry), the event,
the channel and the action id. A replay puts each event back in the outbox as a new entry and
forgets the dead records of its letters' actions, in one script per event; actions that did
go out stay `sent`, so a replay never posts them twice.

A letter is written for the action Slack refused (a post, say), not for the thread replies
that were then `skipped` because their parent never went out: those have no letter of their
own. So the replay also forgets the skipped replies of each letter's thread
(`{event_id}|{channel}|reply.1`, `reply.2`, … as `bot.alerts.plan` names them), and the
replayed post comes back with its whole thread. A thread's replies are claimed in order, so
their records have no gaps: the script tries `reply.1` upwards and stops at the first one
that has no record (at most `MAX_THREAD_REPLIES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.typing import EncodableT

from storage.connection import Redis
from storage.consumer import parse_entries
from storage.keys import Keys
from storage.lua import script

DEAD_LETTER_MAXLEN = 10_000
THREAD_REPLY = "reply."  # the slot of a thread's n-th reply is `reply.{n}` (bot.alerts.plan)
MAX_THREAD_REPLIES = 100  # a bound only: bot.alerts.render caps a thread well below it

# KEYS: outbox, dead letters, actions; ARGV: event id, payload JSON, its field ("event" or
# "notice"), n letters, m action ids, max replies, letter ids..., action ids... (their dead or
# skipped records are forgotten), thread prefixes... (`{event_id}|{channel}|reply.`: the
# skipped records of `reply.1` upwards are forgotten, up to the first reply with no record)
REPLAY = script("""
local n, m, max_replies = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local first = 7
for i = first, first + n - 1 do redis.call('XDEL', KEYS[2], ARGV[i]) end
for i = first + n, first + n + m - 1 do
  local rec = decode(redis.call('HGET', KEYS[3], ARGV[i]))
  if rec and (rec.state == 'dead' or rec.state == 'skipped') then
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
end
for i = first + n + m, #ARGV do
  for k = 1, max_replies do
    local id = ARGV[i] .. k
    local raw = redis.call('HGET', KEYS[3], id)
    if not raw then break end
    local rec = decode(raw)
    if rec and rec.state == 'skipped' then redis.call('HDEL', KEYS[3], id) end
  end
end
return redis.call('XADD', KEYS[1], '*', 'event_id', ARGV[1], ARGV[3], ARGV[2])
""")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    event_id: str
    event: str  # the JobEvent (or notice) JSON, as the outbox held it ("" when malformed)
    channel: str
    action_id: str
    reason: str
    detail: str
    payload: str = "event"  # the outbox field it came in: "event" or "notice"

    @property
    def at(self) -> datetime:
        """When it was dead-lettered (the stream id's Redis time)."""
        return datetime.fromtimestamp(int(self.id.split("-", 1)[0]) / 1000, UTC)


@dataclass(frozen=True, slots=True)
class Letter:
    """What goes into the stream."""

    entry_id: str
    event_id: str
    event: str
    channel: str
    action_id: str
    reason: str
    detail: str = ""
    consumer: str = ""
    payload: str = "event"  # "event" (a JobEvent) or "notice"


class DeadLetters:
    def __init__(self, redis: Redis, keys: Keys, *, maxlen: int = DEAD_LETTER_MAXLEN) -> None:
        self._redis = redis
        self._keys = keys
        self._maxlen = maxlen
        self._replay = redis.register_script(REPLAY)

    async def add(self, letters: Sequence[Letter]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for letter in letters:
                fields: dict[EncodableT, EncodableT] = {
                    "entry_id": letter.entry_id,
                    "event_id": letter.event_id,
                    "event": letter.event,
                    "channel": letter.channel,
                    "action_id": letter.action_id,
                    "reason": letter.reason,
                    "detail": letter.detail[:2000],
                    "consumer": letter.consumer,
                    "payload": letter.payload,
                }
                pipe.xadd(self._keys.dead_letter, fields, maxlen=self._maxlen, approximate=True)
            await pipe.execute()

    async def read(self, count: int = 100) -> list[DeadLetter]:
        """The oldest `count` letters."""
        rows = await self._redis.xrange(self._keys.dead_letter, "-", "+", count=count)
        return [
            DeadLetter(
                id=row.id,
                event_id=row.fields.get("event_id", ""),
                event=row.fields.get("event", ""),
                channel=row.fields.get("channel", ""),
                action_id=row.fields.get("action_id", ""),
                reason=row.fields.get("reason", ""),
                detail=row.fields.get("detail", ""),
                payload=row.fields.get("payload", "event"),
            )
            for row in parse_entries(rows)
        ]

    async def count(self) -> int:
        return int(await self._redis.xlen(self._keys.dead_letter))

    async def replay(self, letters: Sequence[DeadLetter]) -> int:
        """Send the letters' events through the outbox again; return how many went back."""
        by_event: dict[str, list[DeadLetter]] = {}
        for letter in letters:
            if letter.event and letter.event_id:  # a malformed entry has nothing to deliver
                by_event.setdefault(letter.event_id, []).append(letter)
        k = self._keys
        for event_id, group in by_event.items():
            actions = [letter.action_id for letter in group if letter.action_id]
            threads = dict.fromkeys(_thread_prefix(letter) for letter in group)
            await self._replay(
                keys=[k.outbox, k.dead_letter, k.actions],
                args=[
                    event_id,
                    group[0].event,
                    "notice" if group[0].payload == "notice" else "event",
                    len(group),
                    len(actions),
                    MAX_THREAD_REPLIES,
                    *(letter.id for letter in group),
                    *actions,
                    *threads,
                ],
            )
        return len(by_event)


def _thread_prefix(letter: DeadLetter) -> str:
    """`{event_id}|{channel}|reply.`: the id of the letter's thread's replies, less their n."""
    return f"{letter.event_id}|{letter.channel}|{THREAD_REPLY}"
