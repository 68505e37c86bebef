"""Delivering one channel's share of a batch: pause and pace, digest or not, claim, look for an
earlier post, post, record; retry, back off or dead-letter. Used by `bot.alerts.notifier.Notifier`.

Within a channel, stream order holds: the head of the queue goes first, and when it cannot go
(paused, paced, busy at another consumer, failing) nothing after it goes either.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from itertools import takewhile

from bot.alerts.render import render_alert, render_digest, render_minimal, with_mention
from bot.alerts.send import AlertPoster, alert_metadata
from bot.alerts.slack_errors import Scope, SlackFailure, Verdict, classify
from bot.app.metrics import Metrics
from bot.domain.events import EventKind, JobEvent
from storage.delivery import (
    Claim,
    DeliveryRecord,
    DeliveryState,
    DeliveryStore,
    OutboxEntry,
    Pair,
)

log = logging.getLogger("bot.alerts.notifier")

HINTS = {
    Scope.CHANNEL: "invite the bot to the channel or fix the channel id",
    Scope.WORKSPACE: "check SLACK_BOT_TOKEN and the app's scopes",
    Scope.MESSAGE: "the message was refused",
}


def sid(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable (milliseconds, sequence)."""
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
    """One routed outbox entry."""

    entry: OutboxEntry
    event_id: str
    event: JobEvent
    channels: tuple[str, ...]


def is_open(record: DeliveryRecord | None) -> bool:
    """Not yet delivered to the channel (nor dead-lettered)."""
    return record is None or not record.done


def first_open(ch: str, queue: list[Item], records: Mapping[Pair, DeliveryRecord]) -> Item | None:
    """The channel's oldest item still to deliver: the head of its queue."""
    return next((it for it in queue if is_open(records.get((it.event_id, ch)))), None)


MAX_BUG_STRIKES = 5  # unexpected failures in a row before a channel's head is dead-lettered


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    digest_threshold: int = 5  # more events than this waiting for a channel: one digest
    channel_min_interval: float = 1.0  # seconds between posts to one channel
    max_digest: int = 50  # events in one digest (its metadata lists them all)
    lease: timedelta = timedelta(seconds=30)  # another consumer's claim is live this long
    retry_base: float = 1.0  # back-off after a 5xx / connection error, doubling...
    retry_cap: float = 60.0  # ...up to this
    history_margin: timedelta = timedelta(minutes=2)  # look this far before the first attempt
    oncall_mention: str | None = None  # Slack markup (`<@U…>`) put on alerts with failures


class ChannelDelivery:
    """Delivers queues of items to channels; keeps each channel's back-off state."""

    def __init__(
        self,
        *,
        store: DeliveryStore,
        poster: AlertPoster,
        metrics: Metrics,
        clock: Callable[[], datetime],
        policy: DeliveryPolicy,
        consumer: str,
    ) -> None:
        self._store = store
        self._poster = poster
        self._metrics = metrics
        self._clock = clock
        self.policy = policy
        self.consumer = consumer
        self._failures: dict[str, int] = {}  # consecutive failures per channel (back-off)

    # --- one channel ----------------------------------------------------------------------
    async def deliver(
        self,
        ch: str,
        queue: list[Item],
        records: dict[Pair, DeliveryRecord],
        blocked_from: str | None,
        result: NotifyResult,
    ) -> None:
        def open_(it: Item) -> bool:
            return is_open(records.get((it.event_id, ch)))

        def unsent(it: Item) -> bool:
            record = records.get((it.event_id, ch))
            return record is None or record.state is DeliveryState.IN_FLIGHT

        try:
            while True:
                todo = [it for it in queue if open_(it)]
                if blocked_from is not None:
                    todo = [it for it in todo if sid(it.entry.id) < sid(blocked_from)]
                if not todo or await self._store.pause_left(ch) > 0:
                    return
                head = todo[0]
                record = records.get((head.event_id, ch))
                if record is not None and record.state is DeliveryState.SENT:
                    if not await self._reply(ch, head, record, records, result):
                        return
                    continue
                run = list(takewhile(unsent, todo))
                group = (
                    run[: self.policy.max_digest]
                    if len(run) > self.policy.digest_threshold
                    else run[:1]
                )
                if not await self._store.acquire_gate(ch, self.policy.channel_min_interval):
                    return
                failure = await self._send(ch, group, records, result)
                if failure is None:
                    continue
                if failure.verdict is not Verdict.PERMANENT:
                    return  # paused, backing off, or busy elsewhere: later
                if failure.scope is not Scope.MESSAGE:  # the rest would fail the same way
                    await self._give_up(
                        ch, [it for it in queue if open_(it)], failure, records, result
                    )
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
        lease = self.policy.lease
        claims = await self._store.claim([(it.event_id, ch) for it in group], now=now, lease=lease)
        # Another live consumer works on one: stop before it, to keep the order.
        busy = [claims[(it.event_id, ch)][0] is Claim.BUSY for it in group]
        usable = group[: busy.index(True)] if True in busy else group
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
                since = min(record.at for _, record in retry) - self.policy.history_margin
                found = await self._poster.find_posted(
                    ch, {it.event_id for it, _ in retry}, since=since
                )
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
                    log.info(
                        "alert already in %s (ts=%s) after an interrupted attempt: "
                        "not posting event=%r again",
                        ch,
                        ts,
                        it.event_id,
                    )
                else:
                    to_post.append(it)
            records.update(marks)
            await self._store.mark(marks)
            to_post.sort(key=lambda it: sid(it.entry.id))
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
        try:
            if len(items) == 1:
                message = render_alert(items[0].event, now=now)
            else:
                message = render_digest([it.event for it in items], now=now)
        except Exception:  # a rendering bug must not hold the channel's queue forever
            log.exception(
                "rendering %d alert(s) for %s failed; posting them as minimal text",
                len(items),
                ch,
            )
            message = render_minimal([it.event for it in items])
        mention = self.policy.oncall_mention
        if mention is not None and any(it.event.kind is EventKind.FAILED for it in items):
            message = with_mention(message, mention)
        metadata = alert_metadata([it.event_id for it in items])
        pairs = [(it.event_id, ch) for it in items]
        posted = await self._poster.post(ch, message, metadata)
        ts, failure = posted.ts, posted.failure
        if posted.plain_text:
            self._metrics.messages.labels(outcome="plain_text_fallback").inc()
            result.plain_text_fallback += 1
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
        digest = f" digest_of={len(items)}" if len(items) > 1 else ""
        for it in items:  # one line per event, whether it went alone or in a digest
            log.info(
                "alert sent event=%r kind=%s connector=%r channel=%s ts=%s%s",
                it.event_id,
                it.event.kind.value,
                it.event.job.connector_id,
                ch,
                ts,
                digest,
            )
        return None

    async def _reply(
        self,
        ch: str,
        item: Item,
        record: DeliveryRecord,
        records: dict[Pair, DeliveryRecord],
        result: NotifyResult,
    ) -> bool:
        """Post the next thread reply of a sent alert (best effort). False: stop for now."""
        if not await self._store.acquire_gate(ch, self.policy.channel_min_interval):
            return False
        chunks = render_alert(item.event, now=self._clock()).thread_chunks
        done = record.model_copy(update={"replies": record.replies_due})
        if record.replies < len(chunks) and record.ts is not None:
            failure = await self._poster.reply(ch, record.ts, chunks[record.replies])
            if failure is None:
                done = record.model_copy(update={"replies": record.replies + 1})
                result.replies += 1
            elif failure.verdict is Verdict.RATE_LIMITED:
                await self._retry_later(ch, failure, [], result)
                return False
            else:
                log.warning(
                    "thread reply %d/%d for %r in %s failed (%s); the rest of the error text "
                    "is not threaded",
                    record.replies + 1,
                    len(chunks),
                    item.event_id,
                    ch,
                    failure.reason,
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
            await self.back_off(ch, failure.reason, result)

    async def back_off(self, ch: str, reason: str, result: NotifyResult) -> None:
        attempt = self._failures[ch] = self._failures.get(ch, 0) + 1
        wait = min(self.policy.retry_base * 2 ** min(attempt - 1, 30), self.policy.retry_cap)
        wait *= random.uniform(0.8, 1.0)  # replicas do not retry in lockstep
        await self._store.pause(ch, wait)
        self._metrics.messages.labels(outcome="retried").inc()
        result.retried += 1
        log.warning("Slack failed for %s (%s): retry %d in %.1fs", ch, reason, attempt, wait)

    async def quarantine(
        self,
        ch: str,
        queue: list[Item],
        records: dict[Pair, DeliveryRecord],
        error: Exception,
        result: NotifyResult,
    ) -> None:
        """Dead-letter the channel's first open item after it kept failing with a bug, so
        the alerts behind it can flow (`dead-letters --replay` sends it once fixed)."""
        head = first_open(ch, queue, records)
        if head is None:
            return
        record = DeliveryRecord(state=DeliveryState.DEAD_LETTERED, at=self._clock())
        await self.dead_letter([head.entry], ch, "bot_error", repr(error)[:500], result)
        records[(head.event_id, ch)] = record
        await self._store.mark({(head.event_id, ch): record})
        log.error(
            "alert event=%r for %s failed %d times with a bug (%s): dead-lettered so the "
            "channel's queue moves on",
            head.event_id,
            ch,
            MAX_BUG_STRIKES,
            type(error).__name__,
        )

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
        await self.dead_letter([it.entry for it in items], ch, failure.reason, "", result)
        records.update(marks)
        await self._store.mark(marks)
        log.error(
            "Slack refused %d alert(s) for %s permanently (%s): dead-lettered; %s",
            len(items),
            ch,
            failure.reason,
            HINTS[failure.scope],
        )

    async def dead_letter(
        self, entries: list[OutboxEntry], ch: str, reason: str, detail: str, result: NotifyResult
    ) -> None:
        now = self._clock()
        for entry in entries:
            await self._store.dead_letter(entry, ch, reason, detail=detail, now=now)
        self._metrics.messages.labels(outcome="dead_lettered").inc(len(entries))
        result.dead_lettered += len(entries)
