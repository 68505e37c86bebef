"""The write side of the outbox: commit one poll's changes and events in one atomic step.

The outbox is a Redis STREAM (`Keys.outbox`) whose entries have exactly two fields, `event_id`
and `event` (the JobEvent's JSON); the notifier owns its consumer group and deletes entries once
acknowledged, so nothing here trims it.

`commit()` is one EVALSHA of a Lua script that, atomically:

1. notes whether the snapshot version is still the one the write was planned against
   (`storage.snapshots`: the poller's snapshot in memory stays trusted only then),
2. sets the baseline marker (if absent),
3. prunes the seen-events set (`Keys.seen_events`, event id -> time) of entries older than the
   retention,
4. writes the changed snapshots and deletes the vanished ones, field by field in their
   buckets, and replaces the snapshot version if it wrote any (when migrating the format
   from before issue 11, every snapshot, and the old hash is left to expire),
5. records the poll's heartbeat (`Keys.last_poll`, with its TTL), when asked, and resets
   the count of failed polls in a row (`storage.ops`),
6. for each event: ZADD NX into the seen-events set and, only if it was new, XADD the entry.

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
from storage.snapshots import SnapshotStore

SEEN_EVENTS_RETENTION = timedelta(days=30)
LEGACY_SNAPSHOT_TTL = timedelta(days=1)  # an old replica of a rolling upgrade still reads it

# KEYS: baseline, seen_events, outbox, snapshot version, last poll, legacy snapshot, ops, then
#       the snapshot buckets written
# ARGV: now (ISO), now (epoch s), prune-before (epoch s), expected version, new version,
#       heartbeat TTL (ms, 0: none), legacy TTL (s, 0: no migration), #buckets,
#       then per bucket: #fields, (job id, value or "" to delete)...,
#       then #events, (event id, JSON)...
COMMIT_LUA = """
local intact = (redis.call('GET', KEYS[4]) or '') == ARGV[4]
redis.call('SET', KEYS[1], ARGV[1], 'NX')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
local migrate = tonumber(ARGV[7]) > 0
local wrote = migrate
local i = 9
for b = 1, tonumber(ARGV[8]) do
  local key = KEYS[7 + b]
  local n = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, n do
    if ARGV[i + 1] == '' then
      redis.call('HDEL', key, ARGV[i])
    else
      redis.call('HSET', key, ARGV[i], ARGV[i + 1])
    end
    i = i + 2
  end
  wrote = true
end
if migrate then
  redis.call('EXPIRE', KEYS[6], ARGV[7])
end
if wrote then
  redis.call('SET', KEYS[4], ARGV[5])
end
if tonumber(ARGV[6]) > 0 then
  redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[6])
  redis.call('HSET', KEYS[7], 'timbal_failures', 0)
end
local result = {intact and 1 or 0, 0}
local n_ev = tonumber(ARGV[i])
i = i + 1
for _ = 1, n_ev do
  if redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[3], '*', 'event_id', ARGV[i], 'event', ARGV[i + 1])
    result[#result + 1] = ARGV[i]
  else
    result[2] = result[2] + 1
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
        self,
        redis: Redis,
        keys: Keys,
        *,
        retention: timedelta = SEEN_EVENTS_RETENTION,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._retention = retention
        # The poller passes the store it loads from, so its snapshot in memory follows.
        self._snapshots = snapshots if snapshots is not None else SnapshotStore(redis, keys)
        self._script = redis.register_script(COMMIT_LUA)

    async def commit(
        self, result: DiffResult, now: datetime, *, heartbeat: timedelta | None = None
    ) -> CommitResult:
        """Write `result` atomically (and the poll's heartbeat); see the module docstring."""
        keys = self._keys
        write = self._snapshots.plan_write(result)
        migrate = int(LEGACY_SNAPSHOT_TTL.total_seconds()) if write.migrate else 0
        args: list[str | float | int] = [
            now.isoformat(),
            now.timestamp(),
            (now - self._retention).timestamp(),
            write.expected,
            write.version,
            int(heartbeat.total_seconds() * 1000) if heartbeat is not None else 0,
            migrate,
            len(write.buckets),
        ]
        for fields in write.buckets.values():
            args.append(len(fields))
            for job_id, value in fields:
                args += [job_id, value]
        args.append(len(result.events))
        for event in result.events:
            args += [event.event_id, event.model_dump_json()]
        names = [keys.baseline, keys.seen_events, keys.outbox, keys.snapshot_version]
        names += [keys.last_poll, keys.snapshot, keys.ops]
        names += [keys.snapshot_bucket(b) for b in write.buckets]
        try:
            reply = await self._script(keys=names, args=args)
        except BaseException:
            self._snapshots.forget()  # it may or may not have been written
            raise
        intact, duplicates, *enqueued = reply
        self._snapshots.committed(write, result, intact=bool(int(intact)))
        return CommitResult(enqueued=[str(e) for e in enqueued], duplicates=int(duplicates))
