"""Every Redis key name, in one place.

All keys of one org share the hash tag `{org_id}`, so every script and pipeline of the bot
touches one Cluster slot: atomic multi-key steps work on Redis Cluster and managed Redis, and
no command spans slots. Each key says how it is bounded (a TTL, a cap, or a pruning rule).
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

    # --- the poller -------------------------------------------------------------------------
    @property
    def snapshot(self) -> str:
        """HASH job id -> JobSnapshot JSON: the format before issue 11, read once to migrate,
        then left to expire (a day)."""
        return f"{self._base}:snapshot"

    def snapshot_bucket(self, bucket: int) -> str:
        """HASH job id -> compact snapshot (`storage.snapshot_codec`) for the jobs whose id
        hashes to `bucket`; a job is dropped once gone longer than the grace."""
        return f"{self._base}:snap:{bucket}"

    @property
    def snapshot_version(self) -> str:
        """STRING: a token that every snapshot write replaces (a poller trusts the snapshot
        it holds while the token is the one it wrote)."""
        return f"{self._base}:snap:version"

    @property
    def baseline(self) -> str:
        """STRING set once the first poll recorded a baseline."""
        return f"{self._base}:baseline"

    @property
    def seen_events(self) -> str:
        """ZSET event id -> time enqueued; makes enqueueing idempotent; pruned by age."""
        return f"{self._base}:events"

    @property
    def last_poll(self) -> str:
        """STRING: time of the last successful poll (for /readyz); has a TTL."""
        return f"{self._base}:heartbeat:poll"

    # --- the outbox and its delivery --------------------------------------------------------
    @property
    def outbox(self) -> str:
        """STREAM of events to deliver (consumer group `notifier`); entries are deleted once
        every action planned from them is final, so its length is the backlog."""
        return f"{self._base}:outbox"

    @property
    def plans(self) -> str:
        """HASH outbox entry id -> Plan JSON (the actions it asks for); deleted with the entry."""
        return f"{self._base}:plans"

    @property
    def actions(self) -> str:
        """HASH action id -> ActionRecord JSON (claimed, sent, dead, skipped); pruned by age."""
        return f"{self._base}:actions"

    @property
    def fence(self) -> str:
        """STRING counter: the fencing token of every claim (INCR; never reset)."""
        return f"{self._base}:fence"

    @property
    def dead_letter(self) -> str:
        """STREAM of actions that could not be delivered; capped (MAXLEN ~)."""
        return f"{self._base}:dead"

    # --- who hears about what -------------------------------------------------------------
    @property
    def subscriptions(self) -> str:
        """HASH `channel|target` -> Subscription JSON; at most 200 per channel."""
        return f"{self._base}:subscriptions"

    @property
    def mutes(self) -> str:
        """HASH `channel|target` -> Mute JSON; deleted when the mute ends (expiry or unmute)."""
        return f"{self._base}:mutes"

    @property
    def held(self) -> str:
        """HASH `channel|target|tally` -> what a mute held back; deleted with the mute."""
        return f"{self._base}:held"

    # --- incidents --------------------------------------------------------------------------
    @property
    def incidents(self) -> str:
        """HASH `inc:{channel}|{connector}` -> open Incident JSON, plus `ack:`/`esc:`/`mute:`
        `{card}` side fields; an incident's fields are deleted when it recovers."""
        return f"{self._base}:incidents"

    @property
    def channel_settings(self) -> str:
        """HASH channel -> ChannelSettings JSON (`/jobs settings`); one field per channel."""
        return f"{self._base}:channels"

    # --- the bot's own health ----------------------------------------------------------------
    @property
    def ops(self) -> str:
        """HASH: failed polls in a row, the last poll error, raised ops alerts (a few fields)."""
        return f"{self._base}:ops"

    @property
    def status(self) -> str:
        """STRING: the delivering replica's figures for `/jobs status`; has a TTL."""
        return f"{self._base}:status"

    # --- replicas and who does what ---------------------------------------------------------
    @property
    def replicas(self) -> str:
        """HASH replica id -> its heartbeat (nonce, alive until); dead ones are pruned."""
        return f"{self._base}:replicas"

    @property
    def poller_lease(self) -> str:
        """STRING: the replica that polls this org; has a TTL."""
        return f"{self._base}:lease:poller"

    @property
    def notifier_lease(self) -> str:
        """STRING: the replica that delivers this org's alerts; has a TTL."""
        return f"{self._base}:lease:notifier"

    # --- Slack gates ------------------------------------------------------------------------
    @property
    def slack_pause(self) -> str:
        """STRING: why all delivery is paused (a token or scope problem); deleted on recovery."""
        return f"{self._base}:slack:paused"

    def channel_pace(self, channel: str) -> str:
        """STRING with a PX TTL: the channel may not be posted to while it exists."""
        return f"{self._base}:pace:{channel}"

    def channel_pause(self, channel: str) -> str:
        """STRING with a PX TTL: a 429's Retry-After or a back-off; holds why."""
        return f"{self._base}:pause:{channel}"
