"""The write side of the outbox: commit one poll's changes and events in one atomic step.

The outbox is a Redis STREAM (`Keys.outbox`) whose entries have exactly two fields, `event_id`
and `event` (the JobEvent's JSON); the notifier owns its consumer group and deletes entries once
acknowledged, so nothing here trims it.

`commit()` is one EVALSHA of a Lua script that, atomically:

1. sets the baseline marker (if absent),
2. writes the changed snapshots and deletes the vanished ones,
3. prunes the seen-events set (`Keys.seen_events`, event id -> time) of entries older than the
   retention,
4. for each event: ZADD NX into the seen-events set and, only if it was new, XADD the entry.

So a snapshot change and the events it caused are never written apart, and a replica racing
with another over the same listing gets `duplicates` and enqueues nothing. Every key shares
the org's hash tag, so the script also runs on Redis Cluster. The number of round trips does
not depend on the number of jobs or events; the script calls Redis once per item server-side
(no `unpack`, whose argument limit a large org would hit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.snapshot import DiffResult
from storage.connection import Redis
from storage.keys import Keys

SEEN_EVENTS_RETENTION = timedelta(days=30)

# KEYS: baseline, snapshot, seen_events, outbox
# ARGV: now (ISO), now (epoch s), prune-before (epoch s), #upserts, #removals, #events,
#       then upserts (job id, JSON)..., removals (job id)..., events (event id, JSON)...
COMMIT_LUA = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[3])
local n_up, n_rm, n_ev = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local i = 7
for _ = 1, n_up do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, n_rm do
  redis.call('HDEL', KEYS[2], ARGV[i])
  i = i + 1
end
local result = {0}
for _ = 1, n_ev do
  if redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[4], '*', 'event_id', ARGV[i], 'event', ARGV[i + 1])
    result[#result + 1] = ARGV[i]
  else
    result[1] = result[1] + 1
  end
  i = i + 2
end
return result
"""


@dataclass(frozen=True)
class CommitResult:
    enqueued: list[str]  # event ids added to the outbox, in the diff's order
    duplicates: int  # events some commit had already enqueued (a racing replica, a replay)


class Outbox:
    def __init__(
        self, redis: Redis, keys: Keys, *, retention: timedelta = SEEN_EVENTS_RETENTION
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._retention = retention
        self._script = redis.register_script(COMMIT_LUA)

    async def commit(self, result: DiffResult, now: datetime) -> CommitResult:
        """Write `result` atomically; see the module docstring."""
        args: list[str | float | int] = [
            now.isoformat(),
            now.timestamp(),
            (now - self._retention).timestamp(),
            len(result.upserts),
            len(result.removals),
            len(result.events),
        ]
        for job_id, snapshot in result.upserts.items():
            args += [job_id, snapshot.model_dump_json()]
        args += result.removals
        for event in result.events:
            args += [event.event_id, event.model_dump_json()]
        keys = self._keys
        reply = await self._script(
            keys=[keys.baseline, keys.snapshot, keys.seen_events, keys.outbox], args=args
        )
        duplicates, *enqueued = reply
        return CommitResult(enqueued=[str(e) for e in enqueued], duplicates=int(duplicates))
