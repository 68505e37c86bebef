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
import copy
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from slack_sdk.web.async_client import AsyncWebClient

from bot.events import EventKind, JobEvent
from bot.metrics import Metrics
from bot.render.alerts import AlertMessage, render_alert, render_digest, render_plain
from bot.routing import Router, distinct_channels
from bot.slack_errors import Scope, SlackFailure, Verdict, classify
from storage.delivery import (
    Claim,
    DeliveryRecord,
    DeliveryState,
    DeliveryStore,
    OutboxEntry,
    Pair,
)
from storage.keys import Keys

log = logging.getLogger(__name__)

EVENT_TYPE = "timbal_job_alert"
HISTORY_PAGES = 10  # 2,000 messages back at most when looking for a post of ours
HINTS = {
    Scope.CHANNEL: "invite the bot to the channel or fix the channel id",
    Scope.WORKSPACE: "check SLACK_BOT_TOKEN and the app's scopes",
    Scope.MESSAGE: "the message was refused",
}


def alert_metadata(event_ids: Sequence[str]) -> dict[str, Any]:
    """The Slack message metadata that lets a later attempt find this post."""
    payload: dict[str, Any] = (
        {"event_id": event_ids[0]} if len(event_ids) == 1 else {"event_ids": list(event_ids)}
    )
    return {"event_type": EVENT_TYPE, "event_payload": payload}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _sid(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class NotifyResult:
    """Figures of one batch. Deliveries are (event, channel) pairs; messages are posts."""

    read: int = 0  # entries read (own pending + new)
    sent: int = 0  # messages posted (a digest counts once)
    digests: int = 0
    retried: int = 0  # failed attempts that will be retried
    dead_lettered: int = 0  # deliveries given up
    deferred: int = 0  # deliveries left for a later batch (paused, paced, ordered, busy)
    acked: int = 0
    already_sent: int = 0  # found sent (record or channel history), not posted again
    plain_text_fallback: int = 0
    replies: int = 0  # thread replies posted

    def line(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


@dataclass(frozen=True, slots=True)
class Item:
    entry: OutboxEntry
    event_id: str
    event: JobEvent
    channels: tuple[str, ...]


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
    ) -> None:
        # Our own copy of the client, without slack_sdk's retry handlers: its connection-error
        # handler would re-send a chat.postMessage Slack may already have processed (a
        # duplicate no in-flight record sees), and a rate-limit handler would sleep inside the
        # call, holding one channel's pause in this process only. Retries are decided here.
        self._slack = copy.copy(slack)
        self._slack.retry_handlers = []
        self._store = DeliveryStore(redis, keys, consumer=consumer, reclaim_idle=reclaim_idle)
        self._router = router
        self._metrics = metrics
        self.consumer = consumer
        self.digest_threshold = digest_threshold
        self.channel_min_interval = channel_min_interval
        self._clock = clock
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.max_digest = max(max_digest, 2)
        self.block = block
        self.idle_wait = idle_wait
        self.reclaim_idle = reclaim_idle
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.history_margin = timedelta(seconds=history_margin)
        self.record_retention = record_retention
        self.prune_every = prune_every
        self._failures: dict[str, int] = {}  # consecutive failures per channel (back-off)
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
            *(self._channel(ch, queues[ch], records, blocked.get(ch), result) for ch in channels),
            return_exceptions=True,
        )
        for ch, outcome in zip(channels, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.error("delivery to %s failed unexpectedly", ch, exc_info=outcome)
                await self._back_off(ch, type(outcome).__name__, result)
            elif isinstance(outcome, BaseException):
                raise outcome
        fresh = await self._store.records(pairs)
        for it in items:
            if all(
                (r := fresh.get((it.event_id, ch))) is not None and r.done for ch in it.channels
            ):
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
                await self._dead_letter([entry], "", "malformed", str(exc), result)
                finished.append(entry.id)
                continue
            try:
                channels = distinct_channels(self._router(event))
            except Exception:
                log.exception("routing %s failed; left pending", event_id)
                result.deferred += 1
                continue
            if not channels:
                unrouted += 1
                await self._dead_letter([entry], "", "no_route", "", result)
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
        last = max(entries, key=lambda e: _sid(e.id)).id
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
                log.debug("routing %s failed", event_id, exc_info=True)
                continue
            candidates += [(entry.id, (event_id, ch)) for ch in channels]
        records = await self._store.records(pair for _, pair in candidates)
        blocked: dict[str, str] = {}
        for entry_id, pair in candidates:
            record = records.get(pair)
            if record is not None and record.done:
                continue
            ch = pair[1]
            if ch not in blocked or _sid(entry_id) < _sid(blocked[ch]):
                blocked[ch] = entry_id
        return blocked

    # --- one channel ----------------------------------------------------------------------
    async def _channel(
        self,
        ch: str,
        queue: list[Item],
        records: dict[Pair, DeliveryRecord],
        blocked_from: str | None,
        result: NotifyResult,
    ) -> None:
        def open_(it: Item) -> bool:
            record = records.get((it.event_id, ch))
            return record is None or not record.done

        def unsent(it: Item) -> bool:
            record = records.get((it.event_id, ch))
            return record is None or record.state is DeliveryState.IN_FLIGHT

        try:
            while True:
                todo = [it for it in queue if open_(it)]
                if blocked_from is not None:
                    todo = [it for it in todo if _sid(it.entry.id) < _sid(blocked_from)]
                if not todo or await self._store.pause_left(ch) > 0:
                    return
                head = todo[0]
                record = records.get((head.event_id, ch))
                if record is not None and record.state is DeliveryState.SENT:
                    if not await self._reply(ch, head, record, records, result):
                        return
                    continue
                run = list(takewhile(unsent, todo))
                group = run[: self.max_digest] if len(run) > self.digest_threshold else run[:1]
                if not await self._store.acquire_gate(ch, self.channel_min_interval):
                    return
                failure = await self._send(ch, group, records, result)
                if failure is not None:
                    if failure.verdict is Verdict.PERMANENT and failure.scope is not Scope.MESSAGE:
                        rest = [it for it in queue if open_(it)]
                        await self._give_up(ch, rest, failure, records, result)
                    return
        finally:
            result.deferred += sum(1 for it in queue if open_(it))

    async def _send(
        self,
        ch: str,
        group: list[Item],
        records: dict[Pair, DeliveryRecord],
        result: NotifyResult,
    ) -> SlackFailure | None:
        """Claim, look for an earlier post, post what is left, record. A failure that should
        stop this channel for now is returned (after it has been dealt with)."""
        now = self._clock()
        lease = timedelta(seconds=self.reclaim_idle)
        claims = await self._store.claim([(it.event_id, ch) for it in group], now=now, lease=lease)
        usable = [it for it in group if claims[(it.event_id, ch)][0] is not Claim.BUSY]
        if len(usable) < len(group):  # another live consumer works on one: keep the order
            usable = group[: group.index(next(it for it in group if it not in usable))]
            if not usable:
                return SlackFailure(Verdict.RETRY, "busy")
        to_post: list[Item] = []
        retry: list[tuple[Item, DeliveryRecord]] = []
        for it in usable:
            claim, record = claims[(it.event_id, ch)]
            if claim is Claim.DONE and record is not None:
                records[(it.event_id, ch)] = record
                result.already_sent += 1
            elif claim is Claim.RETRY and record is not None:
                retry.append((it, record))
            else:
                to_post.append(it)
        if retry:
            try:
                found = await self._find_posted(ch, retry)
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                if failure.verdict in (Verdict.RATE_LIMITED, Verdict.RETRY):
                    await self._retry_later(ch, failure, [], result)
                    return failure
                log.warning(
                    "cannot check %s for earlier posts of %d alert(s) (conversations.history: "
                    "%s); posting them (at least once). Use a channel id and grant "
                    "channels:history / groups:history.",
                    ch,
                    len(retry),
                    failure.reason,
                )
                found = {}
            marks: dict[Pair, DeliveryRecord] = {}
            for it, _ in retry:
                if it.event_id in found:
                    ts, single = found[it.event_id]
                    due = self._replies_due(it) if single else 0
                    marks[(it.event_id, ch)] = self._sent(now, ts, due)
                    result.already_sent += 1
                else:
                    to_post.append(it)
            records.update(marks)
            await self._store.mark(marks)
            to_post.sort(key=lambda it: _sid(it.entry.id))
        if not to_post:
            return None
        return await self._post_alert(ch, to_post, now, records, result)

    async def _post_alert(
        self,
        ch: str,
        items: list[Item],
        now: datetime,
        records: dict[Pair, DeliveryRecord],
        result: NotifyResult,
    ) -> SlackFailure | None:
        if len(items) == 1:
            message = render_alert(items[0].event, now=now)
        else:
            message = render_digest([it.event for it in items], now=now)
        metadata = alert_metadata([it.event_id for it in items])
        pairs = [(it.event_id, ch) for it in items]
        ts, failure = await self._post(ch, message, metadata, result)
        if failure is not None:
            if failure.verdict is Verdict.PERMANENT:
                await self._give_up(ch, items, failure, records, result)
            else:
                await self._retry_later(ch, failure, pairs, result)
            return failure
        assert ts is not None
        marks = {p: self._sent(now, ts, len(message.thread_chunks)) for p in pairs}
        records.update(marks)
        await self._store.mark(marks)
        self._failures.pop(ch, None)
        self._metrics.messages.labels(outcome="sent").inc()
        result.sent += 1
        result.digests += len(items) > 1
        return None

    async def _post(
        self, ch: str, message: AlertMessage, metadata: dict[str, Any], result: NotifyResult
    ) -> tuple[str | None, SlackFailure | None]:
        """chat.postMessage with blocks; once more as plain text if Slack refuses them."""
        try:
            response = await self._slack.chat_postMessage(
                channel=ch,
                text=message.text,
                blocks=message.blocks,
                metadata=metadata,
                unfurl_links=False,
                unfurl_media=False,
            )
            return str(response["ts"]), None
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            if failure.verdict is not Verdict.INVALID:
                return None, failure
        log.warning("Slack refused the blocks for %s (%s): retrying as plain text", ch, failure)
        self._metrics.messages.labels(outcome="plain_text_fallback").inc()
        result.plain_text_fallback += 1
        try:
            response = await self._slack.chat_postMessage(
                channel=ch,
                text=render_plain(message),
                metadata=metadata,
                unfurl_links=False,
                unfurl_media=False,
            )
            return str(response["ts"]), None
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            if failure.verdict is Verdict.INVALID:  # refused twice: give up on this message
                failure = SlackFailure(Verdict.PERMANENT, failure.reason)
            return None, failure

    async def _find_posted(
        self, ch: str, retry: list[tuple[Item, DeliveryRecord]]
    ) -> dict[str, tuple[str, bool]]:
        """event id -> (ts, posted alone) of our messages in `ch` since the first attempt."""
        wanted = {it.event_id for it, _ in retry}
        oldest = min(record.at for _, record in retry) - self.history_margin
        found: dict[str, tuple[str, bool]] = {}
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            response = await self._slack.conversations_history(
                channel=ch,
                oldest=f"{max(oldest.timestamp(), 0):.6f}",
                include_all_metadata=True,
                limit=200,
                cursor=cursor,
            )
            for message in response.get("messages") or []:
                meta = message.get("metadata") or {}
                if meta.get("event_type") != EVENT_TYPE:
                    continue
                payload = meta.get("event_payload") or {}
                if payload.get("event_id") in wanted:
                    found[str(payload["event_id"])] = (str(message["ts"]), True)
                for event_id in payload.get("event_ids") or []:
                    if event_id in wanted:
                        found.setdefault(str(event_id), (str(message["ts"]), False))
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if wanted <= found.keys() or not cursor:
                break
        return found

    async def _reply(
        self,
        ch: str,
        item: Item,
        record: DeliveryRecord,
        records: dict[Pair, DeliveryRecord],
        result: NotifyResult,
    ) -> bool:
        """Post the next thread reply of a sent alert (best effort). False: stop for now."""
        if not await self._store.acquire_gate(ch, self.channel_min_interval):
            return False
        chunks = render_alert(item.event, now=self._clock()).thread_chunks
        done = record.model_copy(update={"replies": record.replies_due})
        if record.replies < len(chunks) and record.ts is not None:
            try:
                await self._slack.chat_postMessage(
                    channel=ch,
                    thread_ts=record.ts,
                    text=chunks[record.replies],
                    unfurl_links=False,
                    unfurl_media=False,
                )
                done = record.model_copy(update={"replies": record.replies + 1})
                result.replies += 1
            except Exception as exc:
                failure = classify(exc)
                if failure is not None and failure.verdict is Verdict.RATE_LIMITED:
                    await self._retry_later(ch, failure, [], result)
                    return False
                log.warning(
                    "thread reply %d/%d for %s in %s failed (%s); the rest of the error text "
                    "is not threaded",
                    record.replies + 1,
                    len(chunks),
                    item.event_id,
                    ch,
                    failure.reason if failure is not None else repr(exc),
                )
        records[(item.event_id, ch)] = done
        await self._store.mark({(item.event_id, ch): done})
        return True

    # --- outcomes -------------------------------------------------------------------------
    def _sent(self, now: datetime, ts: str, replies_due: int) -> DeliveryRecord:
        return DeliveryRecord(
            state=DeliveryState.SENT, at=now, ts=ts, consumer=self.consumer, replies_due=replies_due
        )

    def _replies_due(self, item: Item) -> int:
        if item.event.kind is not EventKind.FAILED:
            return 0
        return len(render_alert(item.event, now=self._clock()).thread_chunks)

    async def _retry_later(
        self, ch: str, failure: SlackFailure, not_posted: list[Pair], result: NotifyResult
    ) -> None:
        if failure.verdict is Verdict.RATE_LIMITED:
            # Slack did not take the message: no doubt is left for the in-flight records.
            await self._store.forget(not_posted)
            self._metrics.slack_ratelimited.inc()
            self._metrics.messages.labels(outcome="retried").inc()
            result.retried += 1
            wait = failure.retry_after or 1.0
            await self._store.pause(ch, wait)
            log.warning("Slack rate-limited %s: pausing that channel for %.1fs", ch, wait)
        else:
            await self._back_off(ch, failure.reason, result)

    async def _back_off(self, ch: str, reason: str, result: NotifyResult) -> None:
        attempt = self._failures[ch] = self._failures.get(ch, 0) + 1
        wait = min(self.retry_base * 2 ** min(attempt - 1, 30), self.retry_cap)
        wait *= random.uniform(0.8, 1.0)  # replicas do not retry in lockstep
        await self._store.pause(ch, wait)
        self._metrics.messages.labels(outcome="retried").inc()
        result.retried += 1
        log.warning("Slack failed for %s (%s): retry %d in %.1fs", ch, reason, attempt, wait)

    async def _give_up(
        self,
        ch: str,
        items: list[Item],
        failure: SlackFailure,
        records: dict[Pair, DeliveryRecord],
        result: NotifyResult,
    ) -> None:
        now = self._clock()
        marks = {
            (it.event_id, ch): DeliveryRecord(
                state=DeliveryState.DEAD_LETTERED, at=now, consumer=self.consumer
            )
            for it in items
        }
        await self._dead_letter([it.entry for it in items], ch, failure.reason, "", result)
        records.update(marks)
        await self._store.mark(marks)
        log.error(
            "Slack refused %d alert(s) for %s permanently (%s): dead-lettered; %s",
            len(items),
            ch,
            failure.reason,
            HINTS[failure.scope],
        )

    async def _dead_letter(
        self, entries: list[OutboxEntry], ch: str, reason: str, detail: str, result: NotifyResult
    ) -> None:
        now = self._clock()
        for entry in entries:
            await self._store.dead_letter(entry, ch, reason, detail=detail, now=now)
        self._metrics.messages.labels(outcome="dead_lettered").inc(len(entries))
        result.dead_lettered += len(entries)
