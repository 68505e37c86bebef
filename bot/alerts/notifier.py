"""The notifier: outbox -> route -> per channel (pause, pace, digest) -> Slack -> record -> ack.

Exactly once, across crashes and replicas:

1. Before a post, each (event, channel) is *claimed*: recorded `in_flight` in Redis.
2. The message carries Slack metadata `{"event_type": "timbal_job_alert", "event_payload":
   {"event_id": ...}}` (a digest: `{"event_ids": [...]}`).
3. After Slack's `ok`, the record becomes `sent`; once every routed channel of an entry is
   sent (or dead-lettered), the entry is XACKed and XDELeted.
4. A claim that finds `in_flight` (we may have posted, then crashed) first reads the channel's
   history (`conversations.history`, `include_all_metadata`) for a message with that event id;
   found -> recorded `sent`, not posted again. (Scopes: channels:history / groups:history.)
   A record that says `sent` -> just acknowledged.

Never block the queue: each channel is worked on its own; a paused (429 Retry-After, back-off)
or paced channel is deferred while the others flow; within a channel, stream order holds
(nothing is posted for a channel while an earlier entry for it is still pending, here or at
another consumer). Permanent errors dead-letter and move on; `invalid_blocks` /
`msg_too_long` get one plain-text retry. A failure whose error text was cut gets the full text
as thread replies afterwards (best effort, paced like every post, never re-posting the main
message). One log line per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts.deliver import (
    MAX_BUG_STRIKES,
    ChannelDelivery,
    DeliveryPolicy,
    Item,
    NotifyResult,
    first_open,
    is_open,
    sid,
)
from bot.alerts.route import Router, distinct_channels
from bot.alerts.send import AlertPoster
from bot.app.metrics import Metrics
from storage.delivery import DeliveryStore, OutboxEntry, Pair
from storage.keys import Keys

__all__ = ["Notifier", "NotifyResult"]

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Notifier:
    """Delivers outbox entries to Slack. `run_once()` is one batch; `run_forever()` loops."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        slack: AsyncWebClient,
        keys: Keys,
        router: Router,
        metrics: Metrics,
        consumer: str,
        digest_threshold: int = 5,
        channel_min_interval: float = 1.0,
        clock: Callable[[], datetime] = _utcnow,
        batch_size: int = 100,
        max_pending: int = 1000,
        max_digest: int = 50,
        block: float = 1.0,
        idle_wait: float = 0.2,
        reclaim_idle: float = 30.0,
        retry_base: float = 1.0,
        retry_cap: float = 60.0,
        history_margin: float = 120.0,
        record_retention: timedelta = timedelta(days=7),
        prune_every: float = 600.0,
        oncall_mention: str | None = None,
    ) -> None:
        self._store = DeliveryStore(redis, keys, consumer=consumer, reclaim_idle=reclaim_idle)
        self.policy = DeliveryPolicy(
            digest_threshold=digest_threshold,
            channel_min_interval=channel_min_interval,
            max_digest=max(max_digest, 2),
            lease=timedelta(seconds=reclaim_idle),
            retry_base=retry_base,
            retry_cap=retry_cap,
            history_margin=timedelta(seconds=history_margin),
            oncall_mention=oncall_mention,
        )
        self._delivery = ChannelDelivery(
            store=self._store,
            poster=AlertPoster(slack),  # a copy of the client, without hidden retries
            metrics=metrics,
            clock=clock,
            policy=self.policy,
            consumer=consumer,
        )
        self._router = router
        self._metrics = metrics
        # channel -> (its first open entry, unexpected failures in a row on that entry)
        self._strikes: dict[str, tuple[str | None, int]] = {}
        self.consumer = consumer
        self._clock = clock
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.block = block
        self.idle_wait = idle_wait
        self.record_retention = record_retention
        self.prune_every = prune_every
        self._group_ready = False
        self._last_prune = 0.0

    @property
    def store(self) -> DeliveryStore:
        return self._store

    # --- the loop -------------------------------------------------------------------------
    async def run_forever(self, stop: asyncio.Event) -> None:
        """Batches until `stop` is set; Redis or Slack trouble is logged and waited out."""
        failures = 0
        block: float | None = None
        while not stop.is_set():
            try:
                result = await self.run_once(block=block)
                failures = 0
            except Exception:
                failures += 1
                wait = min(0.5 * 2 ** min(failures, 6), 30.0)
                log.exception("notifier batch failed; retrying in %.1fs", wait)
                await self._wait(stop, wait)
                continue
            if time.monotonic() - self._last_prune >= self.prune_every:
                await self.prune()
            # Nothing read: the next read blocks (briefly) for new entries. Deferred work:
            # look again shortly. Progress: go straight on.
            block = self.block if result.read == 0 else None
            progress = result.sent + result.acked + result.dead_lettered + result.replies
            if result.read and not progress:
                await self._wait(stop, self.idle_wait)

    @staticmethod
    async def _wait(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async def prune(self) -> None:
        """Drop old delivery records and forgotten consumers (dead replicas)."""
        self._last_prune = time.monotonic()
        try:
            records = await self._store.prune_records(
                now=self._clock(), max_age=self.record_retention
            )
            consumers = await self._store.prune_consumers(
                idle=self.record_retention.total_seconds()
            )
        except Exception:
            log.exception("pruning delivery records failed")
            return
        if records or consumers:
            log.info("notifier pruned records=%d consumers=%d", records, consumers)

    async def refresh_backlog_metrics(self) -> None:
        backlog = await self._store.backlog()
        self._metrics.outbox_backlog.set(backlog.length)
        self._metrics.outbox_oldest_age.set(backlog.oldest_age)

    # --- one batch ------------------------------------------------------------------------
    async def run_once(self, *, block: float | None = None) -> NotifyResult:
        """Read a batch (own pending first, reclaimed, new), deliver what may go, ack."""
        started = time.monotonic()
        result = NotifyResult()
        if not self._group_ready:
            await self._store.ensure_group()
            self._group_ready = True
        try:
            await self._store.reclaim(self.batch_size)
            entries = await self._store.read(
                self.batch_size, block=block, max_pending=self.max_pending
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted; create the group again
                self._group_ready = False
            raise
        result.read = len(entries)
        if entries:
            await self._process(entries, result)
        await self.refresh_backlog_metrics()
        moved = result.sent + result.acked + result.dead_lettered + result.retried + result.replies
        level = logging.INFO if moved else logging.DEBUG  # a deferred-only batch is quiet
        ms = (time.monotonic() - started) * 1000
        log.log(level, "notifier batch: %s ms=%.0f", result.line(), ms)
        return result

    async def _process(self, entries: list[OutboxEntry], result: NotifyResult) -> None:
        items, finished = await self._items(entries, result)
        pairs = [(it.event_id, ch) for it in items for ch in it.channels]
        records = await self._store.records(pairs)
        blocked = await self._blocked_by_others(entries)
        queues: dict[str, list[Item]] = {}
        for it in items:
            for ch in it.channels:
                queues.setdefault(ch, []).append(it)
        channels = list(queues)
        outcomes = await asyncio.gather(
            *(
                self._delivery.deliver(ch, queues[ch], records, blocked.get(ch), result)
                for ch in channels
            ),
            return_exceptions=True,
        )
        for ch, outcome in zip(channels, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.error("delivery to %s failed unexpectedly", ch, exc_info=outcome)
                first = first_open(ch, queues[ch], records)
                head = first.entry.id if first is not None else None
                last_head, strikes = self._strikes.get(ch, (None, 0))
                strikes = strikes + 1 if head == last_head else 1
                self._strikes[ch] = (head, strikes)
                if strikes >= MAX_BUG_STRIKES:  # a bug, not Slack: never block the queue
                    del self._strikes[ch]
                    await self._delivery.quarantine(ch, queues[ch], records, outcome, result)
                else:
                    await self._delivery.back_off(ch, type(outcome).__name__, result)
            elif isinstance(outcome, BaseException):
                raise outcome
        fresh = await self._store.records(pairs)
        for it in items:
            if all(not is_open(fresh.get((it.event_id, ch))) for ch in it.channels):
                finished.append(it.entry.id)
        result.acked = await self._store.ack_and_delete(finished)

    async def _items(
        self, entries: list[OutboxEntry], result: NotifyResult
    ) -> tuple[list[Item], list[str]]:
        """Parse and route; malformed and unroutable entries are dead-lettered and finished."""
        items: list[Item] = []
        finished: list[str] = []
        unrouted = 0
        for entry in entries:
            if not entry.fields:  # deleted while pending: nothing left to deliver
                finished.append(entry.id)
                continue
            try:
                event, event_id = entry.event(), entry.fields["event_id"]
            except (KeyError, ValueError) as exc:
                log.error("outbox entry %s is malformed (%s): dead-lettered", entry.id, exc)
                await self._delivery.dead_letter([entry], "", "malformed", str(exc), result)
                finished.append(entry.id)
                continue
            try:
                channels = distinct_channels(self._router(event))
            except Exception:
                log.exception("routing %r failed; left pending", event_id)
                result.deferred += 1
                continue
            if not channels:
                unrouted += 1
                await self._delivery.dead_letter([entry], "", "no_route", "", result)
                finished.append(entry.id)
                continue
            items.append(Item(entry, event_id, event, tuple(channels)))
        if unrouted:
            log.warning(
                "%d alert(s) had no channel to go to (is ALERT_CHANNEL set?): dead-lettered "
                "with reason no_route",
                unrouted,
            )
        return items, finished

    async def _blocked_by_others(self, entries: list[OutboxEntry]) -> dict[str, str]:
        """channel -> id of the earliest entry another consumer still holds for it: ours after
        it wait (per-channel order across replicas; a dead holder's are reclaimed in time)."""
        last = max(entries, key=lambda e: sid(e.id)).id
        others = await self._store.pending_of_others(last)
        candidates: list[tuple[str, Pair]] = []
        for entry in others:
            try:
                event, event_id = entry.event(), entry.fields["event_id"]
            except (KeyError, ValueError):  # malformed: it is dead-lettered, never posted
                continue
            try:
                channels = distinct_channels(self._router(event))
            except Exception:  # its holder logs it; it is not posted before ours either
                log.debug("routing %r failed", event_id, exc_info=True)
                continue
            candidates += [(entry.id, (event_id, ch)) for ch in channels]
        records = await self._store.records(pair for _, pair in candidates)
        blocked: dict[str, str] = {}
        for entry_id, pair in candidates:
            if not is_open(records.get(pair)):
                continue
            ch = pair[1]
            if ch not in blocked or sid(entry_id) < sid(blocked[ch]):
                blocked[ch] = entry_id
        return blocked
