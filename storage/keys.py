"""Every Redis key name, in one place.

All keys of one org share the hash tag `{org_id}` so multi-key atomic steps (the outbox
commit) also work on Redis Cluster and managed Redis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str
    org_id: str

    @property
    def _base(self) -> str:
        return f"{self.prefix}:{{{self.org_id}}}"

    @property
    def snapshot(self) -> str:
        """HASH job id -> JobSnapshot JSON."""
        return f"{self._base}:snapshot"

    @property
    def baseline(self) -> str:
        """STRING set once the first poll recorded a baseline."""
        return f"{self._base}:baseline"

    @property
    def seen_events(self) -> str:
        """ZSET event id -> time enqueued; makes enqueueing idempotent; pruned by age."""
        return f"{self._base}:events"

    @property
    def outbox(self) -> str:
        """STREAM of events waiting to be sent (consumer group `notifier`)."""
        return f"{self._base}:outbox"

    @property
    def dead_letter(self) -> str:
        """STREAM of deliveries that failed permanently; capped."""
        return f"{self._base}:dead"

    @property
    def delivery(self) -> str:
        """HASH `event_id|channel` -> DeliveryRecord JSON (in flight / sent); pruned by age."""
        return f"{self._base}:delivery"

    @property
    def poller_lease(self) -> str:
        """STRING holding the id of the replica that polls this org; has a TTL."""
        return f"{self._base}:lease:poller"

    @property
    def last_poll(self) -> str:
        """STRING: time of the last successful poll (heartbeat for /readyz); has a TTL."""
        return f"{self._base}:heartbeat:poll"

    def channel_gate(self, channel: str) -> str:
        """STRING with a PX TTL: the channel may not be posted to while it exists."""
        return f"{self._base}:gate:{channel}"

    def channel_pause(self, channel: str) -> str:
        """STRING with a PX TTL: set from a 429's Retry-After; the channel waits while it exists."""
        return f"{self._base}:pause:{channel}"
