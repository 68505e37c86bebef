"""One attempt at one unit of delivery: claim -> decide -> act -> record. Only I/O lives here;
what to do next is always `bot.alerts.decide`'s verdict.

A unit is one action, or several posts merged into a digest. The attempt runs under a local
deadline a margin shorter than its claim's lease (both are extended together while a history
search waits out Slack), so it is cancelled before the lease can lapse. Just before the Slack
call the claim is checked again (`ActionRecords.begin`: same token, our heartbeat alive, lease
left, pace gate free); the outcome is recorded only with the same token.

An attempt interrupted during the call (a crash, a stand-down past its grace, a timeout)
leaves its actions in doubt; the next attempt waits until the call has had `Timing.settle`
(3 s) since it began to reach Slack, then looks for the message before sending again.

The windows that remain: a process that freezes, after that check and before Slack has
received the call, for longer than its heartbeat TTL (`HEARTBEAT_TTL_SECONDS`) can have its
work taken over by another replica, and both may post; and a request cut off on the wire that
Slack stores more than `settle` seconds after it was sent is not found by the search, and is
posted a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from redis.exceptions import RedisError

from bot.alerts.decide import (
    AlreadyDone,
    DeadLetter,
    Facts,
    Parent,
    Policy,
    Quarantine,
    SearchFirst,
    Send,
    Skip,
    Stage,
    Verdict,
    Wait,
    WaitReason,
    decide,
)
from bot.alerts.failure import Scope, SlackFailure, hint_for
from bot.alerts.render import render_digest, render_minimal, with_mention
from bot.alerts.send import SearchPage, SlackSender, metadata
from bot.app.metrics import Metrics
from bot.backoff import backoff
from bot.domain.delivery import Action, ActionKind, ActionRecord, Message, RecordState
from bot.domain.events import EventKind, JobEvent
from bot.domain.notices import CardRefresh, Escalation, MuteSummary, OpsAlert
from storage.dead_letters import DeadLetters, Letter
from storage.gates import BACKOFF, RATE_LIMITED, SlackGates
from storage.records import ActionRecords, Claimed, ClaimReply, ClaimStatus, Release

log = logging.getLogger("bot.alerts.notifier")

DIGEST = "digest"  # the reason recorded on the posts a digest carried
# A channel-wide refusal (`channel_not_found`) dead-letters the channel's queued backlog without
# calling Slack again, for at most this long and until the queue is empty.
CHANNEL_REFUSAL_MEMORY = 60.0

Tokens = list[tuple[str, int]]
Payload = JobEvent | MuteSummary | CardRefresh | Escalation | OpsAlert  # an outbox entry's


@dataclass(frozen=True, slots=True)
class Timing:
    slack_timeout: float = 10.0  # seconds, one Slack call
    margin: float = 5.0  # seconds between the local deadline and the claim's lease
    pace: float = 1.0  # seconds between two messages to one channel
    # Seconds a request cut off on the wire (a crash, a stand-down past its grace) may still
    # take to reach Slack and be stored: its successor looks for it only after that.
    settle: float = 3.0

    @property
    def lease_ms(self) -> int:
        """Covers one call, its plain-text retry, and the margin twice."""
        return int((2 * self.slack_timeout + 2 * self.margin) * 1000)

    @property
    def deadline(self) -> float:
        """The local deadline of an attempt, in seconds: the lease less the margin."""
        return self.lease_ms / 1000 - self.margin

    @property
    def min_left_ms(self) -> int:
        """Lease that must be left at `begin()` for the call to fit in it."""
        return int((self.slack_timeout + self.margin) * 1000)


@dataclass(frozen=True, slots=True)
class Progress:
    """These actions are final now: the queue goes on."""

    final: dict[str, ActionRecord]


@dataclass(frozen=True, slots=True)
class Later:
    """Nothing more for this channel for `seconds` (None: until delivery is resumed)."""

    seconds: float | None
    reason: str


Outcome = Progress | Later


@dataclass
class _Attempt:
    channel: str
    unit: Sequence[Action]
    claims: dict[str, Claimed]
    tokens: Tokens
    facts: Facts
    timeout: asyncio.Timeout
    parent_ts: str = ""  # the ts of the message the head replies under or updates
    sending: bool = False
    plain_text_tried: bool = False
    found: dict[str, str] = field(default_factory=dict)

    def extend(self, seconds: float) -> None:
        self.timeout.reschedule(asyncio.get_running_loop().time() + seconds)


class ChannelDelivery:
    """Delivers units for any channel; keeps each channel's count of failures in a row."""

    def __init__(
        self,
        *,
        records: ActionRecords,
        gates: SlackGates,
        dead_letters: DeadLetters,
        sender: SlackSender,
        metrics: Metrics,
        policy: Policy,
        timing: Timing,
        event_of: Callable[[Action], tuple[str, Payload]],
        clock: Callable[[], datetime],
        on_slack_trouble: Callable[[], None],
    ) -> None:
        self._records = records
        self._gates = gates
        self._dead = dead_letters
        self._sender = sender
        self._metrics = metrics
        # An interrupted call is waited out (`Timing.settle`) before its message is looked for.
        self.policy = replace(
            policy, settle_ms=int(min(timing.settle, timing.slack_timeout) * 1000)
        )
        self.timing = timing
        self._event_of = event_of  # action -> (outbox entry id, event)
        self._clock = clock
        self._on_slack_trouble = on_slack_trouble
        self.failures: dict[str, int] = {}  # channel -> transient failures in a row
        self.refused: dict[str, tuple[str, float]] = {}  # channel -> (reason, monotonic until)
        self.sent_ts: dict[str, str] = {}  # action id -> ts, for replies and updates
        self.digested: set[str] = set()  # posts that went out inside a digest
        self.unthreadable: set[str] = set()  # posts Slack refused a reply under
        self.bugs: dict[str, str] = {}  # action id -> the last bug it hit (for its letter)
        # Whether Slack answered its last health check (the notifier's probe says): while it
        # does, a message Slack keeps failing is the message's problem and keeps its strikes.
        self.slack_answers = True
        self.stopping = False  # standing down: attempts under way start no new Slack call

    # --- one unit ---------------------------------------------------------------------------
    async def attempt(self, channel: str, unit: Sequence[Action]) -> Outcome:
        ids = [a.id for a in unit]
        reply = await self._records.claim(channel, ids, lease_ms=self.timing.lease_ms)
        claims = reply.claims
        tokens = [(a, c.record.token) for a, c in claims.items() if c.status is ClaimStatus.CLAIMED]
        run: _Attempt | None = None
        try:
            async with asyncio.timeout(self.timing.deadline) as timeout:
                facts, parent_ts = await self._facts(channel, unit, reply)
                run = _Attempt(channel, unit, claims, tokens, facts, timeout, parent_ts)
                return await self._act(run, decide(facts, self.policy))
        except TimeoutError:
            await self._release(tokens, self._interrupted(run))
            seconds = self._backoff_seconds(channel)
            self.failures[channel] = self.failures.get(channel, 0) + 1
            log.warning(
                "delivery to %s took longer than %.0fs: retrying in %.1fs",
                channel,
                self.timing.deadline,
                seconds,
            )
            return Later(seconds, "deadline")
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(tokens, self._interrupted(run)))
            raise
        except RedisError as exc:  # Redis, not the action: no strike, try again shortly
            log.warning("delivery to %s: Redis failed (%s); retrying", channel, exc)
            with contextlib.suppress(Exception):
                await self._release(tokens, self._interrupted(run))
            return Later(self._backoff_seconds(channel), "redis")
        except Exception as exc:
            log.exception("delivery to %s failed with a bug; retrying (strike kept)", channel)
            for action_id in ids:
                self.bugs[action_id] = repr(exc)[:500]
            with contextlib.suppress(Exception):
                await self._release(tokens, Release.BUG)
            return Later(self._backoff_seconds(channel), "bug")

    async def skip(self, channel: str, unit: Sequence[Action]) -> Progress:
        """Record actions as deliberately not sent (an update a later one supersedes); what
        another holder has, or what is final already, is left as it is."""
        ids = [a.id for a in unit]
        reply = await self._records.claim(channel, ids, lease_ms=self.timing.lease_ms)
        claimed = {a: c for a, c in reply.claims.items() if c.status is ClaimStatus.CLAIMED}
        tokens = [(a, c.record.token) for a, c in claimed.items()]
        if any(c.record.doubt for c in claimed.values()):  # it may have moved the card: try it
            await self._release(tokens, Release.UNUSED)
            return Progress({})
        done = {a: c.record for a, c in reply.claims.items() if c.status is ClaimStatus.DONE}
        progress = await self._finish(tokens, RecordState.SKIPPED, reason="superseded")
        return Progress(done | progress.final)

    @staticmethod
    def _interrupted(run: _Attempt | None) -> Release:
        return Release.INTERRUPTED if run is not None and run.sending else Release.UNUSED

    async def _facts(
        self, channel: str, unit: Sequence[Action], reply: ClaimReply
    ) -> tuple[Facts, str]:
        """What `decide()` needs, and the ts of the head's parent message (resolved once, so
        an entry acknowledged meanwhile cannot take it from under the call)."""
        gates, claims = reply.gates, reply.claims.values()
        mine = {a: c.record for a, c in reply.claims.items() if c.status is ClaimStatus.CLAIMED}
        held = [c.record for c in claims if c.status is ClaimStatus.HELD]
        doubts = [r.doubt_since or r.first_at for r in mine.values() if r.doubt]
        interrupted = any(r.interrupted for r in mine.values() if r.doubt)
        refused, until = self.refused.get(channel, ("", 0.0))
        head = unit[0]
        parent, parent_ts = await self._parent(head)
        facts = Facts(
            now=gates.now,
            done=any(c.status is ClaimStatus.DONE for c in claims),
            held_until=max((r.lease_until for r in held), default=0),
            strikes=tuple((a, r.strikes) for a, r in mine.items()),
            doubt_since=min(doubts, default=0),
            interrupted=interrupted,
            workspace_paused=bool(gates.workspace),
            pause_left=gates.pause_left,
            pace_left=gates.pace_left,
            channel_refused=refused if until > asyncio.get_running_loop().time() else "",
            parent=parent,
            channel_failures=self.failures.get(channel, 0),
            jitter=random.random(),
            fallback=head.fallback,
            idempotent=head.kind is ActionKind.UPDATE and not head.fallback,
        )
        return facts, parent_ts

    async def _parent(self, action: Action) -> tuple[Parent, str]:
        target = action.target
        if target is None:
            return Parent.NONE, ""
        if target in self.digested or target in self.unthreadable:
            return Parent.GONE, ""
        if target in self.sent_ts:
            return Parent.SENT, self.sent_ts[target]
        record = (await self._records.read([target])).get(target)
        if record is None and action.fallback:  # an older entry's message, record pruned
            return Parent.GONE, ""
        if record is None or not record.final:
            return Parent.PENDING, ""
        self._remember(target, record)
        if record.state is RecordState.SENT and record.ts and record.reason != DIGEST:
            return Parent.SENT, record.ts
        return Parent.GONE, ""

    # --- verdicts ---------------------------------------------------------------------------
    async def _act(self, run: _Attempt, verdict: Verdict) -> Outcome:
        while True:
            if isinstance(verdict, AlreadyDone):
                await self._release(run.tokens, Release.UNUSED)
                final = {a: c.record for a, c in run.claims.items() if c.status is ClaimStatus.DONE}
                for action_id, record in final.items():
                    self._remember(action_id, record)
                return Progress(final)
            if isinstance(verdict, Wait):
                return await self._wait(run, verdict, None)
            if isinstance(verdict, Quarantine):
                return await self._quarantine(run, verdict)
            if isinstance(verdict, Skip):
                return await self._finish(run.tokens, RecordState.SKIPPED, reason=verdict.reason)
            if isinstance(verdict, DeadLetter):
                return await self._dead_letter(run, verdict.reason)
            if isinstance(verdict, SearchFirst):
                found = await self._search(run, verdict)
                if isinstance(found, Progress | Later):
                    return found
                verdict = found
                continue
            sent = await self._send(run, verdict)
            if isinstance(sent, Progress | Later):
                return sent
            verdict = sent

    async def _wait(self, run: _Attempt, verdict: Wait, failure: SlackFailure | None) -> Later:
        channel, now = run.channel, run.facts.now
        seconds = None if verdict.until is None else max(verdict.until - now, 0) / 1000
        release = Release.UNUSED
        keep = False
        if failure is not None and verdict.reason is WaitReason.RATE_LIMITED:
            assert verdict.until is not None
            await self._gates.pause(channel, verdict.until - now, RATE_LIMITED)
            self.failures.pop(channel, None)  # after its Retry-After, start afresh
            self._metrics.slack_ratelimited.inc()
            self._metrics.messages.labels(outcome="retried").inc()
            log.warning("Slack rate-limited %s: pausing that channel for %.1fs", channel, seconds)
            release = Release.NOT_POSTED
        elif failure is not None and verdict.reason is WaitReason.BACKOFF:
            assert verdict.until is not None
            await self._gates.pause(channel, verdict.until - now, BACKOFF)
            n = self.failures[channel] = self.failures.get(channel, 0) + 1
            self._metrics.messages.labels(outcome="retried").inc()
            self._on_slack_trouble()
            log.warning(
                "Slack failed for %s (%s): retry %d in %.1fs", channel, failure.reason, n, seconds
            )
            release = Release.NOT_POSTED
            if self.slack_answers and run.sending:  # Slack is well: this message is the trouble
                keep = True
                for action_id, _ in run.tokens:
                    self.bugs[action_id] = f"Slack kept answering {failure.reason}"
        elif failure is not None and verdict.reason is WaitReason.WORKSPACE:
            hint = hint_for(failure.reason)
            if failure.needed:
                hint += f" (Slack says it needs: {failure.needed})"
            since = await self._gates.pause_workspace(failure.reason, hint, failure.needed)
            if since >= now - 1000:  # this attempt paused it: say so here, once
                log.error(
                    "Slack refused the bot's token (%s): all delivery is paused and nothing is "
                    "dead-lettered; %s. Delivery resumes by itself once auth.test works.",
                    failure.reason,
                    hint,
                )
            release = Release.NOT_POSTED
        if run.sending:  # the call may have gone through: the next attempt searches first
            release = Release.MAYBE_POSTED
        await self._release(run.tokens, release, keep_strike=keep)
        return Later(seconds, verdict.reason.value)

    @staticmethod
    def _places(head: Action, parent_ts: str) -> list[str | None]:
        """Where an action's message would be: its thread (a reply), the channel (a post, an
        update's repost), or both (a reply that may have fallen back to a top-level post)."""
        thread = parent_ts or None
        if head.kind is ActionKind.REPLY and thread is not None:
            return [thread, None] if head.fallback else [thread]
        return [None]

    async def _search(self, run: _Attempt, verdict: SearchFirst) -> Verdict | Outcome:
        doubtful = {
            a
            for a, c in run.claims.items()
            if c.status is ClaimStatus.CLAIMED and c.record.doubt and a in dict(run.tokens)
        }
        wanted = doubtful or {a for a, _ in run.tokens}
        head = run.unit[0]
        # The doubtful call began at doubt_since and could reach Slack a Slack timeout later.
        latest = run.facts.doubt_since + self.policy.settle_ms + self.policy.history_margin_ms
        for place in self._places(head, run.parent_ts):
            cursor: str | None = None
            while True:
                page = await self._sender.search(
                    run.channel,
                    wanted,
                    oldest_ms=verdict.oldest,
                    latest_ms=latest,
                    thread_ts=place,
                    cursor=cursor,
                )
                if isinstance(page, SearchPage):
                    run.found |= page.found
                    cursor = page.cursor
                    if wanted <= run.found.keys() or cursor is None:
                        break
                    # Each page may take a Slack timeout: the claim and the deadline follow.
                    if not await self._records.renew(run.tokens, lease_ms=self.timing.lease_ms):
                        return Later(0.0, "claim_lost")
                    run.extend(self.timing.deadline)
                    continue
                after = decide(replace(run.facts, failure=page, stage=Stage.SEARCH), self.policy)
                if isinstance(after, Wait) and after.keep_claim and after.until is not None:
                    wait_ms = max(after.until - run.facts.now, 0)
                    if not await self._records.renew(
                        run.tokens, lease_ms=wait_ms + self.timing.lease_ms
                    ):
                        return Later(0.0, "claim_lost")
                    run.extend(wait_ms / 1000 + self.timing.deadline)
                    log.info(
                        "cannot read the history of %s yet (%s): searching on in %.1fs",
                        run.channel,
                        page.reason,
                        wait_ms / 1000,
                    )
                    await asyncio.sleep(wait_ms / 1000)
                    continue
                if isinstance(after, Send):
                    log.warning(
                        "cannot check %s for an earlier post of %d action(s) (%s); sending them "
                        "(at least once). Use a channel id and grant channels:history / "
                        "groups:history.",
                        run.channel,
                        len(wanted),
                        page.reason,
                    )
                    return replace(after, repost=run.facts.parent is Parent.GONE)
                assert isinstance(after, Wait)
                return await self._wait(run, after, page)
            if wanted <= run.found.keys():
                break
        if not run.found:
            return decide(replace(run.facts, doubt_since=0), self.policy)
        final: dict[str, ActionRecord] = {}
        home = head.target or "" if head.kind is ActionKind.UPDATE else ""
        for action_id, ts in run.found.items():
            log.info(
                "already in %s (ts=%s) after an interrupted attempt: not sending %r again",
                run.channel,
                ts,
                action_id,
            )
            token = dict(run.tokens)[action_id]
            done = await self._finish([(action_id, token)], RecordState.SENT, ts=ts, home=home)
            final |= done.final
        await self._release([(a, t) for a, t in run.tokens if a not in run.found], Release.UNUSED)
        self._metrics.messages.labels(outcome="found_after_interruption").inc(len(final))
        return Progress(final)

    async def _send(self, run: _Attempt, verdict: Send) -> Verdict | Outcome:
        if self.stopping:  # standing down: no new call starts
            await self._release(run.tokens, Release.UNUSED)
            return Later(0.0, "stopping")
        pace = -1 if verdict.plain_text or run.sending else int(self.timing.pace * 1000)
        begun = await self._records.begin(
            run.channel, run.tokens, min_left_ms=self.timing.min_left_ms, pace_ms=pace
        )
        if not begun.ok:
            await self._release(run.tokens, Release.UNUSED)
            if begun.paced_for:
                return Later(begun.paced_for / 1000, "paced")
            log.warning("claim on %s lost before sending (%s)", run.channel, begun.lost)
            return Later(0.0, "claim_lost")
        message, meta, events = self._message(run.unit)
        run.sending = True
        head = run.unit[0]
        result = await self._call(
            run, message, meta, plain_text=verdict.plain_text, repost=verdict.repost
        )
        if isinstance(result, str):
            outcome = await self._finish(
                run.tokens,
                RecordState.SENT,
                ts=result,
                reason=DIGEST if len(run.unit) > 1 else "",
                home=head.target or "" if head.kind is ActionKind.UPDATE else "",
            )
            run.sending = False
            self.failures.pop(run.channel, None)
            self._metrics.messages.labels(outcome="sent").inc()
            if verdict.plain_text:
                self._metrics.messages.labels(outcome="plain_text_fallback").inc()
            if verdict.repost:
                self._metrics.messages.labels(outcome="reposted").inc()
            self._log_sent(run.channel, run.unit, events, result)
            return outcome
        facts = replace(
            run.facts,
            failure=result,
            stage=Stage.SEND,
            plain_text_tried=verdict.plain_text,
            reposting=verdict.repost,
        )
        after = decide(facts, self.policy)
        if isinstance(after, Send):
            if after.repost and not verdict.repost:
                log.warning(
                    "the message %r updates or replies under is gone from %s (%s): posting it "
                    "as a new message",
                    head.id,
                    run.channel,
                    result.reason,
                )
            else:
                log.warning(
                    "Slack refused the message for %s (%s): retrying as plain text",
                    run.channel,
                    result.reason,
                )
            return after
        run.sending = result.maybe_sent
        if isinstance(after, DeadLetter):
            if head.kind is ActionKind.REPLY and head.target and result.scope is Scope.MESSAGE:
                self.unthreadable.add(head.target)  # the rest of its thread would fail too
            if result.scope is Scope.CHANNEL:
                until = asyncio.get_running_loop().time() + CHANNEL_REFUSAL_MEMORY
                self.refused[run.channel] = (after.reason, until)
            return await self._dead_letter(run, after.reason)
        assert isinstance(after, Wait)
        return await self._wait(run, after, result)

    async def _call(
        self,
        run: _Attempt,
        message: Message,
        meta: dict[str, object],
        *,
        plain_text: bool,
        repost: bool = False,
    ) -> str | SlackFailure:
        head = run.unit[0]
        if head.kind is ActionKind.POST or repost:
            return await self._sender.post(run.channel, message, meta, plain_text=plain_text)
        target = run.parent_ts
        if head.kind is ActionKind.REPLY:
            return await self._sender.post(
                run.channel, message, meta, thread_ts=target, plain_text=plain_text
            )
        return await self._sender.update(run.channel, target, message, meta, plain_text=plain_text)

    def _message(self, unit: Sequence[Action]) -> tuple[Message, dict[str, object], list[Payload]]:
        payloads = [self._event_of(a)[1] for a in unit]
        meta = metadata([a.id for a in unit], [e for a in unit for e in a.event_ids])
        if len(unit) == 1:
            return unit[0].message, meta, payloads
        events = [p for p in payloads if isinstance(p, JobEvent)]  # digests are of job alerts
        try:
            alert = render_digest(events, now=self._clock())
        except Exception:  # a rendering bug must not hold the channel's queue
            log.exception("rendering a digest of %d alerts failed; sending minimal text", len(unit))
            alert = render_minimal(events)
        mention = next((a.mention for a in unit if a.mention), None)
        if mention and any(e.kind is EventKind.FAILED for e in events):
            alert = with_mention(alert, mention)
        return Message(text=alert.text, blocks=alert.blocks), meta, payloads

    def _log_sent(
        self, channel: str, unit: Sequence[Action], payloads: list[Payload], ts: str
    ) -> None:
        digest = f" digest_of={len(unit)}" if len(unit) > 1 else ""
        for action, event in zip(unit, payloads, strict=True):
            if not isinstance(event, JobEvent):
                log.info("notice sent action=%r channel=%s ts=%s", action.id, channel, ts)
                continue
            if action.kind is not ActionKind.POST:
                log.info(
                    "%s sent action=%r channel=%s ts=%s", action.kind.value, action.id, channel, ts
                )
                continue
            log.info(
                "alert sent event=%r kind=%s connector=%r channel=%s ts=%s%s",
                event.event_id,
                event.kind.value,
                event.job.connector_id,
                channel,
                ts,
                digest,
            )

    # --- outcomes ---------------------------------------------------------------------------
    async def _finish(
        self,
        tokens: Tokens,
        state: RecordState,
        *,
        ts: str = "",
        reason: str = "",
        home: str = "",
    ) -> Progress:
        lost = set(await self._records.finish(tokens, state, ts=ts, reason=reason, home=home))
        if lost:
            log.warning("%d claim(s) were taken over before their outcome was recorded", len(lost))
        final: dict[str, ActionRecord] = {}
        for action_id, _ in tokens:
            if action_id not in lost:
                final[action_id] = ActionRecord(state=state, ts=ts or None, reason=reason or None)
                self._remember(action_id, final[action_id])
        if final and home and ts:  # the target's message lives at ts now (a card moved)
            self.sent_ts[home] = ts
            self.digested.discard(home)
            self.unthreadable.discard(home)
        return Progress(final)

    def reset(self) -> None:
        """Forget everything kept in memory (standing down: Redis keeps what matters)."""
        self.failures.clear()
        self.refused.clear()
        self.sent_ts.clear()
        self.digested.clear()
        self.unthreadable.clear()
        self.bugs.clear()

    def forget(self, action_id: str) -> None:
        """Drop what is kept in memory about an action whose entry is done."""
        self.sent_ts.pop(action_id, None)
        self.digested.discard(action_id)
        self.unthreadable.discard(action_id)
        self.bugs.pop(action_id, None)

    def _remember(self, action_id: str, record: ActionRecord) -> None:
        if record.state is RecordState.SENT and record.ts:
            self.sent_ts[action_id] = record.ts
            if record.reason == DIGEST:
                self.digested.add(action_id)

    async def _release(self, tokens: Tokens, mode: Release, *, keep_strike: bool = False) -> None:
        if tokens:
            await self._records.release(tokens, mode, keep_strike=keep_strike)

    async def _quarantine(self, run: _Attempt, verdict: Quarantine) -> Progress:
        """Dead-letter the actions at their strike limit; give the rest of the unit back (the
        queue goes on, and they are tried again on their own)."""
        struck = set(verdict.action_ids)
        tokens = [(a, t) for a, t in run.tokens if a in struck]
        log.error(
            "%d action(s) for %s failed %d times in ways that were not the channel's (a bug, "
            "the process dying during the call, or Slack failing them while it answered the "
            "rest): dead-lettered as bot_error so the channel moves on; "
            "`timbal-jobs-bot dead-letters --replay` sends them once fixed",
            len(tokens),
            run.channel,
            verdict.strikes,
        )
        self._metrics.messages.labels(outcome="quarantined").inc(len(tokens))
        await self._release([(a, t) for a, t in run.tokens if a not in struck], Release.UNUSED)
        bug = next((self.bugs[a] for a, _ in tokens if a in self.bugs), "")
        detail = (
            f"{verdict.strikes} attempts; last: {bug}"
            if bug
            else (f"{verdict.strikes} attempts that never finished (the process died on them?)")
        )
        return await self._dead_letter(run, "bot_error", detail, tokens=tokens)

    async def _dead_letter(
        self, run: _Attempt, reason: str, detail: str = "", *, tokens: Tokens | None = None
    ) -> Progress:
        tokens = run.tokens if tokens is None else tokens
        mine = {a for a, _ in tokens}
        letters = []
        for action in run.unit:
            if action.id in mine:
                entry_id, event = self._event_of(action)
                letters.append(
                    Letter(
                        entry_id=entry_id,
                        event_id=event.event_id,
                        event=event.model_dump_json(),
                        payload="event" if isinstance(event, JobEvent) else "notice",
                        channel=run.channel,
                        action_id=action.id,
                        reason=reason,
                        detail=detail,
                        consumer=self._records.identity.replica,
                    )
                )
        await self._dead.add(letters)
        self._metrics.messages.labels(outcome="dead_lettered").inc(len(letters))
        if reason != "bot_error":
            log.error(
                "Slack refused %d action(s) for %s permanently (%s): dead-lettered; %s",
                len(letters),
                run.channel,
                reason,
                hint_for(reason),
            )
        return await self._finish(tokens, RecordState.DEAD, reason=reason)

    def _backoff_seconds(self, channel: str) -> float:
        n = self.failures.get(channel, 0) + 1
        return backoff(
            n, base=self.policy.backoff_base, cap=self.policy.backoff_cap, jitter=random.random()
        )
