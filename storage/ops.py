"""The bot's own health, under the org's hash tag: `Keys.ops` is one HASH.

- `timbal_failures`: failed polls in a row (the poller counts them; a good poll's commit
  resets it in the same script as its heartbeat, `storage.outbox`);
- `timbal_error`: the last failure, one line, redacted and cut by the poller;
- `raised:{subject}`: set while an ops alert is raised (when, Redis ms). Raising and
  recovering are each one script that also adds the `OpsAlert` notice to the outbox, so each
  is posted exactly once whichever replica watches.

`Keys.status` is a STRING of JSON the delivering replica writes every few seconds for
`/jobs status` (its backlog per channel and what holds each back), with a TTL.
"""

from __future__ import annotations

import json
from typing import Any

from bot.domain.notices import OpsAlert, OpsSubject
from storage.connection import Redis
from storage.keys import Keys
from storage.lua import script

FAILURES = "timbal_failures"
ERROR = "timbal_error"
STATUS_TTL_MS = 60_000

# KEYS: ops, outbox; ARGV: subject, raise ('1') or recover ('0'), event id, notice JSON
# -> 1 when this call changed the state (and queued the notice), else 0
TOGGLE = script("""
local field = 'raised:' .. ARGV[1]
if ARGV[2] == '1' then
  if redis.call('HSETNX', KEYS[1], field, now_ms()) == 0 then return 0 end
elseif redis.call('HDEL', KEYS[1], field) == 0 then
  return 0
end
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'event_id', ARGV[3], 'notice', ARGV[4])
end
return 1
""")


class OpsState:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._toggle = redis.register_script(TOGGLE)

    async def poll_failed(self, error: str) -> int:
        """Count a failed poll; returns how many failed in a row."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(self._keys.ops, FAILURES, 1)
            pipe.hset(self._keys.ops, ERROR, error[:300])
            count, _ = await pipe.execute()
        return int(count)

    async def read(self) -> tuple[int, str, frozenset[OpsSubject]]:
        """(failed polls in a row, the last error, the subjects raised now)."""
        raw: dict[Any, Any] = await self._redis.hgetall(self._keys.ops)
        fields = {str(k): str(v) for k, v in raw.items()}
        known = {s.value for s in OpsSubject}
        raised = frozenset(
            OpsSubject(name.removeprefix("raised:"))
            for name in fields
            if name.startswith("raised:") and name.removeprefix("raised:") in known
        )
        try:
            failures = int(fields.get(FAILURES) or 0)
        except ValueError:
            failures = 0
        return failures, str(fields.get(ERROR) or ""), raised

    async def toggle(self, subject: OpsSubject, *, raised: bool, notice: OpsAlert | None) -> bool:
        """Raise or recover `subject` once; `notice` (None: no ops channel) goes out with it."""
        return bool(
            await self._toggle(
                keys=[self._keys.ops, self._keys.outbox],
                args=[
                    subject.value,
                    "1" if raised else "0",
                    notice.event_id if notice else "",
                    notice.model_dump_json() if notice else "",
                ],
            )
        )

    async def write_status(self, status: dict[str, Any]) -> None:
        await self._redis.set(self._keys.status, json.dumps(status), px=STATUS_TTL_MS)

    async def status(self) -> dict[str, Any] | None:
        raw = await self._redis.get(self._keys.status)
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
