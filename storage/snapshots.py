"""The per-job snapshots the poller diffs against, in one Redis HASH per org.

`load()` is one round trip: HGETALL of the snapshot hash and GET of the baseline marker in one
script (both keys share the org's hash tag). Writes happen only in `Outbox.commit`, in the
same atomic step as the events they cause.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from bot.domain.snapshot import JobSnapshot
from storage.connection import Redis
from storage.keys import Keys

log = logging.getLogger(__name__)

# KEYS: snapshot, baseline. A script rather than MULTI: atomic on Redis Cluster too.
LOAD = """
return {redis.call('HGETALL', KEYS[1]), redis.call('GET', KEYS[2]) or false}
"""


class SnapshotStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._load = redis.register_script(LOAD)

    async def load(self) -> dict[str, JobSnapshot] | None:
        """Every stored snapshot; None when no baseline was ever recorded for the org.

        A value that is not valid snapshot JSON is logged and left out: the job then looks new
        (and the seen-events set keeps a terminal job from alerting twice).
        """
        flat, marker = await self._load(keys=[self._keys.snapshot, self._keys.baseline], args=[])
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        # The marker is written with the first snapshot; a non-empty hash without it (an
        # evicted or hand-deleted marker) still proves a baseline exists.
        if marker is None and not raw:
            return None
        snapshots: dict[str, JobSnapshot] = {}
        for job_id, value in raw.items():
            try:
                snapshots[job_id] = JobSnapshot.model_validate_json(value)
            except ValidationError as exc:
                log.warning(
                    "ignoring corrupt snapshot org=%s job=%r: %s",
                    self._keys.org_id,
                    job_id,
                    exc.errors(include_url=False, include_input=False)[0]["msg"],
                )
        return snapshots
