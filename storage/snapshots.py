"""The per-job snapshots the poller diffs against: compact values in `BUCKETS` hashes per org
(`storage.snapshot_codec`), and the snapshot this poller last wrote, kept in memory.

Redis holds the truth; the store keeps what it loaded and then committed, tagged with the
version token its commit wrote (`Keys.snapshot_version`, replaced by every snapshot write).
`load()` is then one round trip that reads only that token: if it is still the one this
store wrote, no one else wrote since (another replica, a restore, a flush would all have
replaced or removed it), and the snapshot in memory is exact; nothing is sent or decoded
again. Otherwise (the first poll, a takeover, a racing replica) it is two: the token, then
every bucket (one script), decoded once.

The format before issue 11 (JSON per job in one hash, `Keys.snapshot`) is read when no
version exists yet, and the next commit writes it over in the new format, in the same
atomic step as that poll's events (`Outbox.commit`), so the upgrade alerts nothing new.

Writes happen only in `Outbox.commit`, in the same atomic step as the events they cause:
`plan_write()` says which fields change, `committed()` takes the answer.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from bot.domain.snapshot import DiffResult, JobSnapshot
from storage.connection import Redis
from storage.keys import Keys
from storage.snapshot_codec import (
    BUCKETS,
    Decoder,
    LegacySnapshot,
    SnapshotUnreadable,
    bucket_of,
    encode,
)

log = logging.getLogger(__name__)

# KEYS: version. ARGV: the version this store holds ("" for none). The version, if another.
CHECK = """
local version = redis.call('GET', KEYS[1]) or ''
if version == ARGV[1] then return {1} end
return {0, version}
"""

# KEYS: version, baseline, legacy snapshot, then every bucket. Atomic (a script, not MULTI,
# so Redis Cluster runs it too: every key shares the org's hash tag).
LOAD = """
local out = {redis.call('GET', KEYS[1]) or '', redis.call('GET', KEYS[2]) or false}
if out[1] == '' then
  out[3] = redis.call('HGETALL', KEYS[3])
else
  out[3] = {}
end
for i = 4, #KEYS do
  out[i] = redis.call('HGETALL', KEYS[i])
end
return out
"""


@dataclass
class SnapshotWrite:
    """What one commit writes: fields set or deleted, by bucket; the state it leaves."""

    expected: str  # the version the write was planned against ("" for none)
    version: str  # the version the write leaves, if it writes anything
    buckets: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # "" deletes
    migrate: bool = False  # the legacy hash is written over (and left to expire)

    @property
    def writes(self) -> bool:
        return bool(self.buckets) or self.migrate


class SnapshotStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._check = redis.register_script(CHECK)
        self._load = redis.register_script(LOAD)
        self._state: dict[str, JobSnapshot] | None = None  # exact for `_version`; None: none
        self._version = ""  # "" : no version exists
        self._baseline = False  # a baseline was recorded (marker or snapshots)
        self._legacy = False  # `_state` came from the legacy hash: the next write migrates it

    @property
    def bucket_keys(self) -> list[str]:
        return [self._keys.snapshot_bucket(b) for b in range(BUCKETS)]

    async def load(self) -> Mapping[str, JobSnapshot] | None:
        """Every stored snapshot; None when no baseline was ever recorded for the org.

        A value that is not a valid snapshot is logged and left out: the job then looks new
        (and the seen-events set keeps a terminal job from alerting twice).
        """
        if self._state is not None:
            (same, *_) = await self._check(keys=[self._keys.snapshot_version], args=[self._version])
            if int(same):
                return MappingProxyType(self._state) if self._baseline else None
        self.forget()
        keys = [self._keys.snapshot_version, self._keys.baseline, self._keys.snapshot]
        version, marker, legacy, *buckets = await self._load(keys=keys + self.bucket_keys, args=[])
        state = self._decode(buckets, legacy)
        # The marker is written with the first snapshot; snapshots without it (an evicted or
        # hand-deleted marker) still prove a baseline exists.
        self._baseline = marker is not None or any(buckets) or bool(legacy)
        self._state, self._version = state, str(version)
        self._legacy = not version and bool(legacy)
        return MappingProxyType(state) if self._baseline else None

    def _decode(self, buckets: list[Any], legacy: list[Any]) -> dict[str, JobSnapshot]:
        state: dict[str, JobSnapshot] = {}
        for job_id, value in pairs(legacy):
            try:
                state[job_id] = LegacySnapshot.model_validate_json(value).snapshot()
            except ValidationError as exc:
                self._corrupt(job_id, exc.errors(include_url=False, include_input=False)[0]["msg"])
        decoder = Decoder()
        for flat in buckets:
            for job_id, value in pairs(flat):
                try:
                    state[job_id] = decoder.decode(value)
                except SnapshotUnreadable as exc:
                    self._corrupt(job_id, str(exc))
        return state

    def _corrupt(self, job_id: str, why: str) -> None:
        log.warning("ignoring corrupt snapshot org=%s job=%r: %s", self._keys.org_id, job_id, why)

    def plan_write(self, result: DiffResult) -> SnapshotWrite:
        """The fields `result` changes (every snapshot, when the legacy hash is migrated)."""
        write = SnapshotWrite(
            expected=self._version, version=secrets.token_hex(8), migrate=self._legacy
        )
        changed: Mapping[str, JobSnapshot] = result.upserts
        if self._legacy and self._state is not None:  # the whole state, in the new format
            removed = set(result.removals)
            changed = {k: v for k, v in self._state.items() if k not in removed}
            changed |= result.upserts
        for job_id, snapshot in changed.items():
            write.buckets.setdefault(bucket_of(job_id), []).append((job_id, encode(snapshot)))
        for job_id in result.removals:
            write.buckets.setdefault(bucket_of(job_id), []).append((job_id, ""))
        return write

    def committed(self, write: SnapshotWrite, result: DiffResult, *, intact: bool) -> None:
        """The commit of `write` succeeded; `intact`: no one else wrote since it was planned,
        so the state held, updated by `result`, is what Redis holds now."""
        if not intact or self._state is None:
            self.forget()
            return
        for job_id in result.removals:
            self._state.pop(job_id, None)
        self._state.update(result.upserts)
        self._baseline, self._legacy = True, False  # a commit always sets the marker
        if write.writes:
            self._version = write.version

    def forget(self) -> None:
        """Drop what is held (or a commit whose outcome is unknown): the next load reads all."""
        self._state, self._version, self._baseline, self._legacy = None, "", False, False


def pairs(flat: list[Any]) -> list[tuple[str, str]]:
    return list(zip(flat[::2], flat[1::2], strict=True))
