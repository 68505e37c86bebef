"""Edges of the delivery core found by review: each test failed before its fix.

- a stand-down while a post is in flight: the call finishes (or the successor waits until it
  could no longer land) and nothing is posted twice;
- the loop never spins while a worker is busy in a slow Slack call;
- one poisoned action in a digest is quarantined alone;
- a workspace pause lifted while a worker decided to wait loses no channel;
- a `missing_scope` pause lifts only once the token holds the scope;
- a history search waiting out a 429 holds no Slack-call slot;
- a message Slack keeps failing while it answers the rest is quarantined, not retried forever.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from bot.alerts.notifier import Notifier
from bot.domain.delivery import Route, action_id
from bot.domain.events import JobEvent
from tests.fakes import FakeSlack
from tests.notifier_helpers import (
    CH,
    KEYS,
    dead_letters,
    delivered,
    enqueue,
    job_event,
    make_notifier,
    outbox_empty,
    running,
    to,
)
from tests.redis_backends import Backend
from tests.replica_helpers import die
from tests.waiting import wait_until


def _later(
    fake: FakeSlack, call_body: dict[str, Any], call: Any, seconds: float, landed: asyncio.Event
) -> None:
    """Slack got the request and stores the message `seconds` later (its answer never comes)."""

    async def lands() -> None:
        await asyncio.sleep(seconds)
        fake._post("chat.postMessage", call_body, call)
        landed.set()
        await fake._notify()

    asyncio.get_running_loop().create_task(lands())


async def test_a_replica_killed_during_a_slow_post_is_not_posted_twice(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    """Replica a dies while its post is on the wire and Slack is slow to store it (2 s); b
    takes over at once. b waits until the call has had `Timing.settle` (3 s) to reach Slack,
    finds the message, and does not post it again."""
    r = backend.client()
    first, landed = True, asyncio.Event()

    async def slow(call: Any) -> None:
        nonlocal first
        if call.method == "chat.postMessage" and first:
            first = False
            _later(fake_slack, dict(call.body), call, 2.0, landed)
            await asyncio.sleep(8)

    fake_slack.on_request = slow
    a = await make_notifier(r, fake_slack, who="a", slack_timeout=6.0, margin=1.0)
    await enqueue(r, job_event(1))
    pass_a = asyncio.create_task(a.run_once())

    async def posting() -> bool:  # (the fake notifies waiters only once a call is answered)
        return bool(fake_slack.calls_to("chat.postMessage"))

    await wait_until(posting, within=5, what="a's post is on the wire")

    async def nothing(*args: Any, **kwargs: Any) -> list[str]:
        return []

    a.records.release = nothing  # type: ignore[method-assign]  # a kill releases nothing
    await die(r, KEYS, a.identity)
    pass_a.cancel()
    b = await make_notifier(backend.client(), fake_slack, who="b", slack_timeout=6.0, margin=1.0)
    async with running(b):
        await wait_until(lambda: outbox_empty(r), within=20, what="b finished the entry")
    await asyncio.wait_for(landed.wait(), timeout=10)  # a's cut-off call has reached Slack
    assert len(fake_slack.posted(CH)) == 1
    assert fake_slack.calls_to("conversations.history", CH)  # b looked, after the call settled


async def test_a_stand_down_lets_the_call_in_flight_finish(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    """With the default grace (the Slack timeout and a second) a stopping replica finishes
    the call it is in and records it: the successor has nothing to look for."""
    r = backend.client()
    fake_slack.hold("chat.postMessage", 1.5)
    a = await make_notifier(r, fake_slack, who="a", grace=None, slack_timeout=4.0, margin=1.0)
    assert a.grace == 5.0  # by default: the Slack timeout and a second
    await enqueue(r, job_event(1))
    stop = asyncio.Event()
    task = asyncio.create_task(a.run_forever(stop))
    await fake_slack.wait_for(lambda f: bool(f.calls_to("chat.postMessage")), within=5)
    stop.set()
    await task
    b = await make_notifier(backend.client(), fake_slack, who="b")
    async with running(b):
        await wait_until(lambda: outbox_empty(r), within=10, what="acknowledged")
    assert len(fake_slack.posted(CH)) == 1
    assert not fake_slack.calls_to("conversations.history")
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


async def test_the_loop_does_not_spin_while_a_worker_waits_on_slack(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    r = backend.client()
    n = await make_notifier(r, fake_slack, pace=3.0, block=1.0, adopt_every=5.0)
    passes: list[float] = []
    original = n._pass

    async def counting(*, block: float | None) -> Any:
        passes.append(time.monotonic())
        return await original(block=block)

    n._pass = counting  # type: ignore[method-assign]
    await enqueue(r, job_event(1), job_event(2))
    fake_slack.hold("chat.postMessage", 2.0, times=10)
    async with running(n):
        await asyncio.sleep(5.0)
    assert len(fake_slack.posted(CH)) == 2
    # About one pass a second (the read blocks); spinning was hundreds a second.
    assert len(passes) < 40, f"{len(passes)} passes in 5 s"


async def test_a_poisoned_action_in_a_digest_is_quarantined_alone(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    r = backend.client()
    n = await make_notifier(r, fake_slack, digest_threshold=5, max_strikes=5)
    poison, *storm = [job_event(i) for i in range(12)]
    now = int((await r.time())[0]) * 1000
    record = {"state": "in_flight", "strikes": 5, "first_at": now, "attempt_at": now - 60_000}
    await r.hset(KEYS.actions, action_id(poison.event_id, CH, "post"), json.dumps(record))
    await enqueue(r, poison, *storm)
    await n.run_once()
    letters = await dead_letters(r)
    assert [(x["event_id"], x["reason"]) for x in letters] == [(poison.event_id, "bot_error")]
    assert sorted(delivered(fake_slack)) == sorted(e.event_id for e in storm)


async def test_a_channel_that_saw_the_workspace_pause_is_woken_after_it_lifts(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    """A worker that decided to wait for the pause while the probe was lifting it must not
    wait forever."""
    r = backend.client()

    def router(event: JobEvent, /) -> list[Route]:
        return [Route(channel=CH if event.job.id.endswith("1") else "C2")]

    n = await make_notifier(r, fake_slack, router=router)
    good = fake_slack.bot_token
    fake_slack.bot_token = "xoxb-revoked"
    original = n.records.release

    async def slow_release(tokens: Any, mode: Any, **kw: Any) -> Any:
        if any("|C2|" in a for a, _ in tokens):
            await asyncio.sleep(0.5)  # C2's worker is slow to give its claim back
        return await original(tokens, mode, **kw)

    n.records.release = slow_release  # type: ignore[method-assign]
    await enqueue(r, job_event(1))
    async with running(n):
        await asyncio.sleep(1.0)
        assert await _paused(n)
        await enqueue(r, job_event(2))  # a new alert for another channel
        await asyncio.sleep(0.2)
        fake_slack.bot_token = good  # the operator fixes the token
        await fake_slack.wait_for(lambda f: len(f.posted("C2")) == 1, within=5)
    assert len(fake_slack.posted(CH)) == 1


async def _paused(n: Notifier) -> bool:
    return await n.gates.workspace_pause() is not None


async def test_a_missing_scope_pause_lifts_only_once_the_scope_is_granted(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    """auth.test checks no scope: it working says nothing about `chat:write`. The pause holds
    (no call a second, no log line a second) until auth.test lists the scope."""
    r = backend.client()
    fake_slack.scopes = "commands,channels:history"  # chat:write was removed
    fake_slack.fail("chat.postMessage", error="missing_scope", needed="chat:write", times=1)
    n = await make_notifier(r, fake_slack, paused_probe_every=0.05)
    await enqueue(r, *[job_event(i) for i in range(1, 4)])
    async with running(n):
        await wait_until(lambda: _paused(n), within=5, what="delivery paused")
        await asyncio.sleep(2.0)
        assert len(fake_slack.calls_to("chat.postMessage")) == 1  # only the refused one
        assert await _paused(n)
        fake_slack.scopes += ",chat:write"  # the app is reinstalled with the scope
        await wait_until(lambda: outbox_empty(r), within=5, what="delivered after the grant")
    assert len(fake_slack.posted(CH)) == 3


async def test_a_history_search_waiting_out_a_429_holds_no_call_slot(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    r = backend.client()
    channels = {1: "A", 2: "B", 3: "C"}

    def router(event: JobEvent, /) -> list[Route]:
        return [Route(channel=channels[int(event.job.id[-1])])]

    n = await make_notifier(r, fake_slack, router=router, max_concurrent=2)
    events = [job_event(i) for i in (1, 2, 3)]
    now = int((await r.time())[0]) * 1000
    for e in events[:2]:  # A's and B's posts were on the wire a minute ago when a replica died
        record = {
            "state": "in_flight",
            "strikes": 1,
            "sending": True,
            "first_at": now - 60_000,
            "attempt_at": now - 60_000,
        }
        channel = channels[int(e.job.id[-1])]
        await r.hset(KEYS.actions, action_id(e.event_id, channel, "post"), json.dumps(record))
    fake_slack.fail("conversations.history", status=429, retry_after=6, times=2)
    await enqueue(r, *events)
    started = time.monotonic()
    async with running(n):
        await fake_slack.wait_for(lambda f: len(f.posted("C")) == 1, within=20)
        waited = time.monotonic() - started
    assert waited < 4.0, f"C waited {waited:.1f}s behind searches that hold nothing"


async def test_a_message_slack_keeps_failing_while_answering_the_rest_is_quarantined(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    r = backend.client()
    bad, good = job_event(1), job_event(2)

    async def fail_that_one(call: Any) -> None:
        meta = json.dumps(call.body.get("metadata"))
        if call.method == "chat.postMessage" and bad.event_id in meta:
            raise web.HTTPInternalServerError()

    fake_slack.on_request = fail_that_one
    n = await make_notifier(r, fake_slack, max_strikes=3)
    await enqueue(r, bad, good)
    async with running(n):
        await wait_until(lambda: outbox_empty(r), within=20, what="the queue moved on")
    assert delivered(fake_slack) == [good.event_id]
    [letter] = await dead_letters(r)
    assert letter["event_id"] == bad.event_id
    assert "Slack kept answering" in letter["detail"]


async def test_an_outage_does_not_quarantine_innocent_alerts(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    """Slack down for everyone (auth.test too): retries keep no strikes beyond the first, so
    a few seconds of outage with max_strikes=3 lose nothing."""
    r = backend.client()
    n = await make_notifier(r, fake_slack, router=to(CH), max_strikes=3)
    fake_slack.down = True
    await enqueue(r, job_event(1))
    async with running(n):
        await asyncio.sleep(3.0)
        fake_slack.down = False
        await wait_until(lambda: outbox_empty(r), within=15, what="delivered after the outage")
    assert len(fake_slack.posted(CH)) == 1
    assert await dead_letters(r) == []


async def test_a_replica_that_stands_down_forgets_what_slack_held_back(
    backend: Backend, fake_slack: FakeSlack
) -> None:
    """What it waited on is the next holder's to find out: kept, it would read as a Slack
    pause that never ends when this replica takes over again (a false ops alert)."""
    r = backend.client()
    fake_slack.fail("chat.postMessage", status=429, retry_after=30, channel=CH, times=10**6)
    n = await make_notifier(r, fake_slack)
    await enqueue(r, job_event(1))
    stop = asyncio.Event()
    task = asyncio.create_task(n.run_forever(stop))
    await wait_until(lambda: n._health(0, "").slack_paused > 0, within=10, what="held by Slack")
    stop.set()
    await task  # stands down
    health = n._health(0, "")
    assert health.slack_paused == 0 and health.slack_reason == ""
