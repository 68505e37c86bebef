"""The notifier: outbox -> route -> plan -> per-channel delivery -> ack, on one replica at a time.

One replica holds the org's delivery lease and delivers; the others stand by and take over
within seconds of its heartbeat lapsing (`storage.replicas`, `storage.lease`). Slack's limits
(about one message per second per channel), not CPU, bound delivery, so a single deliverer
loses nothing and keeps each channel's order without coordination. On taking over, it adopts
every entry other consumers still hold, then reads new ones.

Each entry is routed (a `Router` built each pass from the subscriptions and mutes of the
moment) and planned (`bot.alerts.plan`) once; the plan is stored, so its actions never change.
Entries also carry notices (a mute's summary), planned as one post. Events nobody subscribed
to are acknowledged and counted (`tjb_events_unrouted_total`). Actions queue per channel, in
stream order, and a worker task per channel delivers its queue head by head
(`bot.alerts.deliver`): a paused, paced or failing channel holds back only itself. Several
waiting posts in a channel become one digest. An entry is acknowledged and deleted once every
action planned from it is final.

A probe watches Slack: after transient failures it calls `auth.test` every second, and when
Slack answers again every back-off is lifted at once; while all delivery is paused (a token or
scope problem) it calls `auth.test` until it works, logs one line a minute meanwhile, and then
resumes. `run_once()` is one pass (what tests call); `run_forever(stop)` loops.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis.exceptions import RedisError, ResponseError
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts.decide import Policy
from bot.alerts.deliver import ChannelDelivery, Later, Payload, Progress, Timing
from bot.alerts.failure import FailureKind
from bot.alerts.plan import plan_entry, plan_notice
from bot.alerts.render import AlertMessage, render_minimal
from bot.alerts.route import Router, RouteSource, distinct
from bot.alerts.send import SlackSender
from bot.alerts.watchdog import Health, Thresholds, watch
from bot.app.metrics import Metrics
from bot.backoff import backoff
from bot.domain.delivery import Action, ActionKind, Message, Plan
from bot.domain.events import JobEvent
from bot.domain.incidents import OVERLAY_FIELDS, Incident
from bot.domain.notices import OpsAlert, parse_notice
from storage.connection import Redis
from storage.consumer import OutboxConsumer, OutboxEntry, stream_order
from storage.dead_letters import DeadLetters, Letter
from storage.gates import SlackGates, WorkspacePause
from storage.incidents import IncidentStore, IncidentTable
from storage.keys import Keys
from storage.lease import Lease
from storage.ops import OpsState
from storage.plans import PlanStore
from storage.records import ActionRecords
from storage.replicas import Identity, Replicas

log = logging.getLogger(__name__)

WEEK_MS = 7 * 24 * 3600 * 1000
# Why a channel waits that counts as Slack holding delivery back (for the ops watch).
HELD_BY_SLACK = frozenset({"rate_limited", "backoff", "workspace", "paused"})


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    digest_threshold: int = 5  # more posts than this waiting in a channel: one digest
    max_digest: int = 50  # posts in one digest (its metadata names them all)
    batch_size: int = 100  # entries read at a time
    max_pending: int = 1000  # entries held in memory at most
    block: float = 1.0  # seconds a read waits for new entries when there is nothing to do
    standby_poll: float = 0.5  # seconds between lease checks while another replica delivers
    lease_ttl: float = 10.0  # the delivery lease (taken over at once when its holder is dead)
    adopt_every: float = 5.0  # seconds between looks for entries other consumers left
    probe_every: float = 1.0  # auth.test while Slack fails
    paused_probe_every: float = 10.0  # auth.test while all delivery is paused
    paused_log_every: float = 60.0
    max_concurrent: int = 20  # Slack calls in flight at once
    # Seconds a call in flight gets to finish when standing down (None: the Slack timeout and
    # a second): one cut off is in doubt, and costs its successor a wait and a history search.
    grace: float | None = None
    record_retention_ms: int = WEEK_MS
    prune_every: float = 600.0
    escalate_after: float = 900.0  # seconds an incident with a mention waits for an ack
    ops_channel: str | None = None  # where the bot's own health alerts go (None: logs only)
    thresholds: Thresholds = field(default_factory=Thresholds)
    status_every: float = 5.0  # seconds between the figures `/jobs status` reads
    backlog_sample_every: float = 60.0  # seconds between the samples the backlog watch uses
    timing: Timing = field(default_factory=Timing)
    policy: Policy = field(default_factory=Policy)


@dataclass
class Batch:
    """Figures of one pass, for the log line and for tests."""

    active: bool = True
    read: int = 0  # entries read (own pending, adopted, new)
    planned: int = 0
    final: int = 0  # actions that became final
    acked: int = 0  # entries acknowledged
    waiting: int = 0  # channels waiting (paused, paced, held, Slack down)

    def line(self) -> str:
        return (
            f"read={self.read} planned={self.planned} final={self.final} "
            f"acked={self.acked} waiting={self.waiting}"
        )


@dataclass
class _Entry:
    entry: OutboxEntry
    event: Payload | None
    plan: Plan | None
    open: set[str]


class Notifier:
    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        slack: AsyncWebClient,
        routes: RouteSource,
        identity: Identity,
        metrics: Metrics,
        config: NotifierConfig | None = None,
        clock: Callable[[], datetime] = _utcnow,
        sweeps: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.config = config or NotifierConfig()
        self.identity = identity
        self._routes = routes
        self._sweeps = list(sweeps)  # run about once a second while delivering (mute expiry)
        self._last_sweep = -math.inf
        self._metrics = metrics
        self._clock = clock
        self.consumer = OutboxConsumer(redis, keys, consumer=identity.replica)
        self.records = ActionRecords(redis, keys, identity)
        self.gates = SlackGates(redis, keys)
        self.dead_letters = DeadLetters(redis, keys)
        self.plans = PlanStore(redis, keys)
        self.incidents = IncidentStore(redis, keys)
        self.ops = OpsState(redis, keys)
        self.lease = Lease(
            redis, keys, key=keys.notifier_lease, identity=identity, ttl=self.config.lease_ttl
        )
        self._replicas = Replicas(redis, keys, identity)
        self._limit = asyncio.Semaphore(self.config.max_concurrent)
        self._sender = SlackSender(
            slack, timeout=self.config.timing.slack_timeout, limit=self._limit
        )
        self.delivery = ChannelDelivery(
            records=self.records,
            gates=self.gates,
            dead_letters=self.dead_letters,
            sender=self._sender,
            metrics=metrics,
            policy=self.config.policy,
            timing=self.config.timing,
            event_of=self._event_of,
            clock=clock,
            on_slack_trouble=self._slack_trouble,
        )
        self.active = False
        self._active_since = -math.inf  # monotonic: when this replica took over
        self._inherited: asyncio.Task[None] | None = None
        self._group_ready = False
        self._entries: dict[str, _Entry] = {}
        self._action_entry: dict[str, str] = {}
        self._queues: dict[str, list[Action]] = {}
        self._order: dict[str, list[tuple[tuple[int, int], int]]] = {}
        self._ready_at: dict[str, float] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._last_adopt = -math.inf
        self._last_prune = time.monotonic()
        self._trouble = asyncio.Event()
        self._probe_failed = False
        self._paused_logged = -math.inf
        self._last_blind_resume = -math.inf
        self._moved = Batch()
        # channel -> (why it waits, since when: monotonic), while it has alerts waiting
        self._waiting: dict[str, tuple[str, float]] = {}
        self._held_at = -math.inf  # when something last waited on Slack (monotonic)
        self._backlog_samples: collections.deque[int] = collections.deque(maxlen=16)
        self._last_sample = -math.inf
        self._last_status = -math.inf

    # --- the loop ---------------------------------------------------------------------------
    async def run_forever(self, stop: asyncio.Event) -> None:
        """Deliver while holding the lease, stand by otherwise, until `stop` is set."""
        probe = asyncio.create_task(self._probe_forever(stop), name="slack-probe")
        failures = 0
        try:
            while not stop.is_set():
                try:
                    batch = await self._pass(block=self._block_for())
                    failures = 0
                except RedisError as exc:
                    failures += 1
                    wait = backoff(failures, base=0.5, cap=10.0)
                    log.warning("notifier: Redis failed (%s); retrying in %.1fs", exc, wait)
                    await _wait(stop, wait)
                    continue
                if not batch.active:
                    await _wait(stop, self.config.standby_poll)
                elif not batch.read and not self._runnable():
                    await asyncio.sleep(0)  # the read already waited
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
            await self.stand_down(release=True)

    async def run_once(self, *, block: float | None = None) -> Batch:
        """One pass: read and plan, deliver what may go now (until each channel waits or is
        empty), acknowledge what is done."""
        batch = await self._pass(block=block)
        if self._workers:
            await asyncio.gather(*self._workers.values(), return_exceptions=True)
        batch.acked += await self._ack()
        if batch.active:
            await self._refresh_backlog()
        return self._figures(batch)

    async def _pass(self, *, block: float | None) -> Batch:
        batch = Batch()
        self._moved = batch
        if not await self.lease.acquire_or_renew():
            if self.active:
                await self.stand_down(release=False)
            batch.active = False
            return batch
        taking_over = not self.active
        if taking_over:
            self.active = True
            self.delivery.stopping = False
            self._active_since = time.monotonic()
            self._last_adopt = -math.inf
            log.info("notifier active replica=%s", self.identity.replica)
        await self._ensure_group()
        await self._read(batch, block if not taking_over else None)
        if taking_over:  # in the background: auth.test must not hold the pass (and the lease)
            self._inherited = asyncio.create_task(
                self._lift_inherited_backoffs(), name="inherited-backoffs"
            )
        self._start_workers()
        batch.acked += await self._ack()
        await self._housekeeping()
        if batch.read or batch.final or batch.acked:
            log.info("notifier batch: %s", self._figures(batch).line())
        return batch

    def _figures(self, batch: Batch) -> Batch:
        now = time.monotonic()
        batch.waiting = sum(
            1 for ch, t in self._ready_at.items() if t > now and self._queues.get(ch)
        )
        return batch

    def _block_for(self) -> float | None:
        """How long a read may wait for new entries: not past the next channel's turn (a
        channel whose worker is running has no turn to wait for)."""
        if self._runnable():
            return None
        waits = [
            t
            for ch, t in self._ready_at.items()
            if self._queues.get(ch) and ch not in self._workers
        ]
        soonest = min(waits, default=math.inf) - time.monotonic()
        return max(min(self.config.block, soonest), 0.0)

    def _runnable(self) -> bool:
        now = time.monotonic()
        return any(
            q and ch not in self._workers and self._ready_at.get(ch, 0.0) <= now
            for ch, q in self._queues.items()
        )

    @property
    def grace(self) -> float:
        grace = self.config.grace
        return self.config.timing.slack_timeout + 1.0 if grace is None else grace

    async def stand_down(self, *, release: bool) -> None:
        """Stop delivering: no new attempt starts; a Slack call in flight may finish (up to
        `grace`), attempts that are only waiting are cancelled; forget the in-memory queues
        (Redis keeps everything); give the lease up when asked."""
        was_active, self.active = self.active, False  # workers start no further attempt
        self.delivery.stopping = True
        if self._inherited is not None:
            self._inherited.cancel()
            self._inherited = None
        workers = list(self._workers.values())
        deadline = time.monotonic() + self.grace
        running = set(workers)
        while running and self._sender.in_flight and time.monotonic() < deadline:
            _, running = await asyncio.wait(running, timeout=0.05)
        for task in running:
            task.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)
        self._workers.clear()
        self._entries.clear()
        self._action_entry.clear()
        self._queues.clear()
        self._order.clear()
        self._ready_at.clear()
        self._waiting.clear()  # what it waited on is the next holder's to find out
        self._held_at = -math.inf
        self.delivery.reset()
        if was_active:
            log.info("notifier standing down replica=%s", self.identity.replica)
        if release:
            with contextlib.suppress(RedisError):
                await self.lease.release()

    async def _ensure_group(self) -> None:
        if not self._group_ready:
            await self.consumer.ensure_group()
            self._group_ready = True

    # --- reading and planning ---------------------------------------------------------------
    async def _read(self, batch: Batch, block: float | None) -> None:
        entries: list[OutboxEntry] = []
        try:
            # Right after taking over, every pass: a stale holder may still be reading entries
            # its lease no longer covers (at most one lease long); then every `adopt_every`.
            just_now = time.monotonic() - self._active_since < self.config.lease_ttl
            if just_now or time.monotonic() - self._last_adopt >= self.config.adopt_every:
                self._last_adopt = time.monotonic()
                adopted = await self.consumer.adopt()
                if adopted:
                    log.info("adopted %d entries other consumers left pending", adopted)
                entries += await self.consumer.read_pending(limit=self.config.max_pending)
            room = self.config.max_pending - len(self._entries)
            if room > 0:
                # BLOCK 0 would wait forever: a wait under a millisecond is no wait.
                wait = max(int(block * 1000), 1) if block and block > 0.001 else None
                entries += await self.consumer.read_new(
                    min(room, self.config.batch_size), block_ms=wait
                )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted: create the group again
                self._group_ready = False
            raise
        fresh = [e for e in entries if e.id not in self._entries]
        batch.read = len(fresh)
        if fresh:
            await self._admit(fresh, batch)

    async def _admit(self, entries: list[OutboxEntry], batch: Batch) -> None:
        stored = await self.plans.load(e.id for e in entries)
        router: Router | None = None  # this pass's routing, loaded when first needed
        table: IncidentTable | None = None  # the open incidents, kept current as plans go
        for entry in sorted(entries, key=lambda e: stream_order(e.id)):
            try:
                payload = _payload(entry)
            except (KeyError, ValueError) as exc:
                log.error("outbox entry %s is malformed (%s): dead-lettered", entry.id, exc)
                await self._dead_letter_entry(entry, "malformed", str(exc))
                self._entries[entry.id] = _Entry(entry, None, None, set())
                continue
            if payload is None:  # deleted while pending: nothing left to deliver
                self._entries[entry.id] = _Entry(entry, None, None, set())
                continue
            plan = stored.get(entry.id)
            # A mute that ended or an incident that changed meanwhile: plan again, from the
            # state as it is now (a few times: each retry reads it afresh).
            for _ in range(4):
                if plan is not None:
                    break
                if router is None and isinstance(payload, JobEvent):
                    router = await self._routes()
                if table is None:
                    table = await self.incidents.table()
                try:
                    ours = self._plan(entry, payload, router, table)
                except _NotRoutable as exc:
                    log.exception("routing %r failed; left pending", exc.event_id)
                    break
                plan = await self.plans.save(ours)
                if plan is None:
                    router, table = None, None
                    continue
                batch.planned += 1
                if plan == ours:
                    _apply(table, plan)
                else:  # another replica's (or an earlier life's) plan: read incidents again
                    table = None
            if plan is None:
                continue  # left pending: the next look at pending entries tries again
            if not plan.actions:
                self._metrics.events_unrouted.inc()  # nobody subscribed (or all muted)
            self._entries[entry.id] = _Entry(entry, payload, plan, {a.id for a in plan.actions})
            for index, action in enumerate(plan.actions):
                self._enqueue(entry.id, index, action)

    def _plan(
        self, entry: OutboxEntry, payload: Payload, router: Router | None, table: IncidentTable
    ) -> Plan:
        now = self._clock()
        if not isinstance(payload, JobEvent):
            try:
                return plan_notice(
                    entry.id, payload, now=now, incidents=table.incidents, threads=table.threads
                )
            except Exception:  # a rendering bug: the notice is dropped, the queue moves on
                log.exception("rendering notice %r failed; dropped", payload.event_id)
                return Plan(entry_id=entry.id, event_id=payload.event_id, actions=[])
        assert router is not None
        try:
            routes = distinct(router(payload))
        except Exception as exc:
            raise _NotRoutable(payload.event_id) from exc
        try:
            return plan_entry(
                entry.id,
                payload,
                routes,
                now=now,
                incidents=table.incidents,
                threads=table.threads,
            )
        except Exception:  # a rendering bug must not hold the channel's queue forever
            log.exception("rendering %r failed; it goes out as minimal text", payload.event_id)
            return plan_entry(entry.id, payload, routes, now=now, render=_minimal, lifecycle=False)

    def _enqueue(self, entry_id: str, index: int, action: Action) -> None:
        """Insert in stream order (an adopted older entry goes before newer ones)."""
        self._action_entry[action.id] = entry_id
        queue = self._queues.setdefault(action.channel, [])
        order = self._order.setdefault(action.channel, [])
        key = (stream_order(entry_id), index)
        at = bisect.bisect_right(order, key)
        order.insert(at, key)
        queue.insert(at, action)

    def _event_of(self, action: Action) -> tuple[str, Payload]:
        entry_id = self._action_entry[action.id]
        event = self._entries[entry_id].event
        assert event is not None
        return entry_id, event

    async def _dead_letter_entry(self, entry: OutboxEntry, reason: str, detail: str) -> None:
        field = "notice" if "notice" in entry.fields else "event"
        letter = Letter(
            entry_id=entry.id,
            event_id=entry.event_id or "",
            event=entry.fields.get(field, ""),
            payload=field,
            channel="",
            action_id="",
            reason=reason,
            detail=detail,
            consumer=self.identity.replica,
        )
        await self.dead_letters.add([letter])
        self._metrics.messages.labels(outcome="dead_lettered").inc()

    # --- per-channel workers ----------------------------------------------------------------
    def _start_workers(self) -> None:
        now = time.monotonic()
        for channel, queue in self._queues.items():
            if queue and channel not in self._workers and self._ready_at.get(channel, 0.0) <= now:
                self._ready_at.pop(channel, None)  # its turn came: nothing to wait for now
                task = asyncio.create_task(self._drain(channel), name=f"deliver:{channel}")
                self._workers[channel] = task
                task.add_done_callback(functools.partial(self._worker_done, channel))

    def _worker_done(self, channel: str, task: asyncio.Task[None]) -> None:
        if self._workers.get(channel) is task:
            del self._workers[channel]
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery worker for %s died", channel, exc_info=task.exception())

    async def _drain(self, channel: str) -> None:
        """Deliver the channel's queue head by head until it must wait or is empty."""
        queue = self._queues[channel]
        while queue and self.active:
            superseded = _superseded(queue)
            if superseded is not None:  # a later update of the same card will say it all
                skipped = await self.delivery.skip(channel, [superseded])
                if skipped.final:
                    self._settle(channel, skipped)
                    continue
            unit = self._next_unit(queue)
            outcome = await self.delivery.attempt(channel, unit)
            if isinstance(outcome, Progress):
                if outcome.final:
                    self._waiting.pop(channel, None)
                self._settle(channel, outcome)
                continue
            assert isinstance(outcome, Later)
            if outcome.reason in HELD_BY_SLACK:
                since = self._waiting.get(channel, ("", time.monotonic()))[1]
                self._waiting[channel] = (outcome.reason, since)
            # "Until resumed" is a look again soon: a wake-up may have come while this attempt
            # was deciding to wait, and must not be lost.
            seconds = self.config.paused_probe_every if outcome.seconds is None else outcome.seconds
            self._ready_at[channel] = time.monotonic() + seconds
            return
        self._ready_at.pop(channel, None)
        self._waiting.pop(channel, None)
        # A channel-wide refusal covered the backlog it found; what comes later is tried.
        self.delivery.refused.pop(channel, None)

    def _next_unit(self, queue: list[Action]) -> list[Action]:
        """The head, or a digest: when more than `digest_threshold` digestible posts wait
        (replies to those posts are skipped over: a digest gets no threads), or as many
        digestible replies to the head's thread (one digest reply in that thread)."""
        head = queue[0]
        if head.kind is ActionKind.REPLY and head.digestible:
            # Replies to one thread waiting in a row (updates of its card in between are
            # passed over: only the last of them goes out), in the channel's order.
            replies: list[Action] = []
            for action in queue:
                if action.target != head.target or len(replies) >= self.config.max_digest:
                    break
                if action.kind is ActionKind.REPLY and action.digestible:
                    replies.append(action)
                elif action.kind is not ActionKind.UPDATE:
                    break
            return replies if len(replies) > self.config.digest_threshold else [head]
        if head.kind is not ActionKind.POST or not head.digestible:
            return [head]
        posts: list[Action] = []
        ids: set[str] = set()
        for action in queue:
            if action.kind is ActionKind.POST and action.digestible:
                posts.append(action)
                ids.add(action.id)
                if len(posts) >= self.config.max_digest:
                    break
            elif action.target not in ids:
                break
        return posts if len(posts) > self.config.digest_threshold else [head]

    def _settle(self, channel: str, progress: Progress) -> None:
        if not progress.final:
            return
        queue, order = self._queues[channel], self._order[channel]
        keep = [i for i, a in enumerate(queue) if a.id not in progress.final]
        queue[:] = [queue[i] for i in keep]
        order[:] = [order[i] for i in keep]
        for action_id in progress.final:
            entry_id = self._action_entry.get(action_id)
            if entry_id is not None and entry_id in self._entries:
                self._entries[entry_id].open.discard(action_id)
        self._moved.final += len(progress.final)

    async def _ack(self) -> int:
        done = [eid for eid, e in self._entries.items() if not e.open]
        if not done:
            return 0
        acked = await self.consumer.finish(done)
        for entry_id in done:
            entry = self._entries.pop(entry_id)
            for action_id in [a.id for a in entry.plan.actions] if entry.plan else []:
                self._action_entry.pop(action_id, None)
                self.delivery.forget(action_id)
        for channel in [ch for ch, q in self._queues.items() if not q]:
            if channel not in self._workers:
                self._queues.pop(channel, None)
                self._order.pop(channel, None)
        return acked

    def wake(self) -> None:
        """Every waiting channel may try again now (Slack works again)."""
        self._ready_at.clear()

    # --- Slack health ------------------------------------------------------------------------
    async def _lift_inherited_backoffs(self) -> None:
        """Back-off pauses left by an earlier holder (a crash during a Slack outage) say
        nothing about Slack now: ask it once, and lift them if it answers."""
        inherited = await self.gates.backed_off(self._queues)
        if inherited and await self._sender.auth_test() is None:
            lifted = await self.gates.clear_backoffs(inherited)
            log.info("Slack answers: %d inherited channel back-off(s) lifted", lifted)

    def _slack_trouble(self) -> None:
        self._trouble.set()

    async def _probe_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._probe(stop)
            except RedisError as exc:
                log.warning("Slack probe: Redis failed (%s)", exc)
                await _wait(stop, self.config.probe_every)

    async def _probe(self, stop: asyncio.Event) -> None:
        paused = await self.gates.workspace_pause() if self.active else None
        if paused is not None:
            failure = await self._sender.auth_test()
            now = time.monotonic()
            back = None if failure is not None else _scope_back(paused, self._sender.granted)
            if back is None and failure is None:  # cannot tell: try delivery once a minute
                back = now - self._last_blind_resume >= self.config.paused_log_every
            if back:
                self._last_blind_resume = now
                await self.gates.resume_workspace()
                log.info("Slack accepts the token again (auth.test ok): delivery resumes")
                self.wake()
                return
            if now - self._paused_logged >= self.config.paused_log_every:
                self._paused_logged = now
                waiting = sum(len(q) for q in self._queues.values())
                log.error(
                    "Slack delivery is paused (%s): %s; %d action(s) waiting, nothing "
                    "dead-lettered",
                    paused.reason,
                    paused.hint,
                    waiting,
                )
            await _wait(stop, self.config.paused_probe_every)
            return
        if not self._trouble.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._trouble.wait(), timeout=1.0)
            return
        failure = await self._sender.auth_test()
        self.delivery.slack_answers = failure is None
        if failure is None or failure.kind is not FailureKind.RETRY:
            self._trouble.clear()
            if self._probe_failed and failure is None:
                lifted = await self.gates.clear_backoffs(list(self._queues))
                self.delivery.failures.clear()
                log.info("Slack answers again: %d channel back-off(s) lifted", lifted)
                self.wake()
            self._probe_failed = False
            return
        self._probe_failed = True
        await _wait(stop, self.config.probe_every)

    # --- housekeeping -------------------------------------------------------------------------
    async def _refresh_backlog(self) -> int:
        backlog = await self.consumer.backlog()
        self._metrics.outbox_backlog.set(backlog.length)
        self._metrics.outbox_oldest_age.set(backlog.oldest_age)
        return backlog.length

    # --- incidents and the bot's own health ---------------------------------------------------
    async def _escalate_due(self) -> None:
        """Remind on-call, once, of each incident with a mention nobody acknowledged in time."""
        now = self._clock()
        table = await self.incidents.table()
        for incident in table.incidents.values():
            waited = (now - incident.noticed_at).total_seconds()
            if (
                incident.mention
                and not incident.acked_by
                and not incident.escalated
                and incident.moving_since is None  # the hung run moves again
                and waited >= self.config.escalate_after
                and await self.incidents.escalate(incident, waited=int(waited))
            ):
                log.info(
                    "incident not acknowledged after %ds: reminding on-call connector=%r "
                    "channel=%s",
                    waited,
                    incident.connector,
                    incident.channel,
                )

    def _health(self, failures: int, error: str) -> Health:
        now = time.monotonic()
        held = [(now - since, why) for why, since in self._waiting.values()]
        paused, why = max(held, default=(0.0, ""))
        if held:
            self._held_at = now
        # Counted from when this replica began delivering: before, it knows nothing.
        well_for = now - max(self._held_at, self._active_since)
        return Health(
            timbal_failures=failures,
            timbal_error=error,
            slack_paused=paused,
            slack_reason=why.replace("_", " "),
            slack_well_for=well_for,
            backlog=list(self._backlog_samples),
        )

    async def _watch(self) -> None:
        """Raise (once) and recover (once) the ops alerts the figures call for."""
        failures, error, raised = await self.ops.read()
        for change in watch(self._health(failures, error), raised, self.config.thresholds):
            channel = self.config.ops_channel
            at = await self.records.now_ms()
            notice = (
                OpsAlert(
                    channel=channel,
                    subject=change.subject,
                    raised=change.raised,
                    detail=change.detail,
                    at=at,
                )
                if channel
                else None
            )
            if await self.ops.toggle(change.subject, raised=change.raised, notice=notice):
                say = log.error if change.raised else log.info
                say(
                    "ops: %s %s%s",
                    change.subject.value,
                    "in trouble" if change.raised else "well again",
                    f": {change.detail}" if change.detail else "",
                )

    async def _write_status(self, backlog: int) -> None:
        """The figures `/jobs status` shows: what waits per channel, and why."""
        channels = [
            {
                "channel": channel,
                "actions": len(queue),
                "reason": self._waiting.get(channel, ("", 0.0))[0],
            }
            for channel, queue in sorted(self._queues.items(), key=lambda kv: -len(kv[1]))
            if queue
        ]
        await self.ops.write_status(
            {
                "at": self._clock().isoformat(),
                "replica": self.identity.replica,
                "backlog": backlog,
                "channels": channels[:100],
            }
        )

    async def _housekeeping(self) -> None:
        backlog = await self._refresh_backlog()
        now = time.monotonic()
        if now - self._last_sample >= self.config.backlog_sample_every:
            self._last_sample = now
            self._backlog_samples.append(backlog)
        if now - self._last_sweep >= 1.0:
            self._last_sweep = now
            for sweep in self._sweeps:
                await sweep()
            await self._escalate_due()
            await self._watch()
        if now - self._last_status >= self.config.status_every:
            self._last_status = now
            await self._write_status(backlog)
        if time.monotonic() - self._last_prune < self.config.prune_every:
            return
        self._last_prune = time.monotonic()
        try:
            records = await self.records.prune(
                now_ms=await self.records.now_ms(), max_age_ms=self.config.record_retention_ms
            )
            consumers = await self.consumer.prune_consumers(idle_ms=self.config.record_retention_ms)
            replicas = await self._replicas.prune()
        except RedisError:
            log.exception("pruning delivery records failed")
            return
        if records or consumers or replicas:
            log.info(
                "notifier pruned records=%d consumers=%d replicas=%d", records, consumers, replicas
            )


def _scope_back(paused: WorkspacePause, granted: frozenset[str] | None) -> bool | None:
    """Whether a workspace pause may lift now that auth.test works: always for a token problem;
    for `missing_scope` only once the token holds the scope Slack asked for (auth.test checks
    no scope); None when that cannot be told (no scope named, or no scopes in the answer)."""
    if paused.reason != "missing_scope":
        return True
    needed = {p.strip() for p in paused.needed.split(",") if p.strip()}
    if not needed or granted is None:
        return None
    return bool(needed & granted)


def _superseded(queue: list[Action]) -> Action | None:
    """The head, when it is an update of a card that a later queued update rewrites again."""
    head = queue[0]
    if head.kind is not ActionKind.UPDATE:
        return None
    later = any(a.kind is ActionKind.UPDATE and a.target == head.target for a in queue[1:])
    return head if later else None


def _apply(table: IncidentTable, plan: Plan) -> None:
    """Keep the in-memory incidents as the stored plan left them (what the buttons set stays)."""
    for write in plan.incidents:
        if not write.value:
            table.incidents.pop(write.key, None)
            continue
        after = Incident.model_validate_json(write.value)
        before = table.incidents.get(write.key)
        if before is not None and before.card == after.card:
            overlay = before.model_dump(include=set(OVERLAY_FIELDS))
            after = after.model_copy(update=overlay)
        table.incidents[write.key] = after


def _payload(entry: OutboxEntry) -> Payload | None:
    """What the entry carries (None: deleted while pending); raises KeyError or ValueError
    when it is malformed, or when its `event_id` field is not its payload's."""
    if not entry.fields:
        return None
    notice = entry.fields.get("notice")
    payload: Payload = parse_notice(notice) if notice is not None else entry.event()
    if entry.event_id != payload.event_id:
        raise ValueError(f"its event_id field is {entry.event_id!r}, not its payload's")
    return payload


class _NotRoutable(Exception):
    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


def _minimal(event: JobEvent, now: datetime) -> AlertMessage:
    return render_minimal([event])


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(seconds, 0.0))


__all__ = ["Batch", "Message", "Notifier", "NotifierConfig"]
