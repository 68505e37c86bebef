"""`/jobs` under load: identical requests share one Timbal call (single-flight) and, for
JOBS_CACHE_SECONDS, its answer; the reply says when the listing was read."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bot.app.config import load_settings
from bot.app.runtime import Runtime, running
from bot.domain.models import Job
from bot.jobs.cache import MAX_SCOPES, SharedListings
from bot.jobs.query import JobsQuery
from bot.timbal import JobListing, TimbalUnavailable
from handlers.commands.jobs import Asked, answer, asked_for
from tests.fakes import FakeSlack, FakeTimbal, make_job
from tests.slack_requests import post, slash_command
from tests.waiting import wait_until

SIGNING_SECRET = "test-signing-secret"  # the bot_env fixture's
T0 = datetime(2026, 11, 29, 14, 3, 7, tzinfo=UTC)


@dataclass
class SlowSource:
    """A JobsSource that answers when told to (`release`), and counts its calls."""

    calls: list[str | None] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    failure: Exception | None = None

    async def list_jobs(self, connector_id: str | None = None) -> list[Job]:
        return (await self.list_jobs_detailed(connector_id)).jobs

    async def list_jobs_detailed(self, connector_id: str | None = None) -> JobListing:
        self.calls.append(connector_id)
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        job = Job.model_validate(make_job("j1", connector_id=connector_id or "any"))
        return JobListing(jobs=[job], skipped=0)


async def test_concurrent_identical_requests_share_one_call_per_scope() -> None:
    source = SlowSource()
    shared = SharedListings(source, ttl=60, clock=lambda: T0)
    scopes = [None, "a", "b", "c"]
    waiting = [asyncio.create_task(shared.list_jobs_detailed(scopes[i % 4])) for i in range(200)]
    await wait_until(lambda: len(source.calls) == 4)
    source.gate.set()
    listings = await asyncio.gather(*waiting)
    assert sorted(source.calls, key=str) == sorted(scopes, key=str)
    assert all(listing.fetched_at == T0 for listing in listings)
    assert listings[1] is listings[5]  # one answer, shared
    again = await shared.list_jobs_detailed("a")  # fresh for the ttl: no call
    assert again is listings[1] and len(source.calls) == 4
    await shared.aclose()


async def test_a_failure_is_shared_but_not_kept() -> None:
    source = SlowSource(failure=TimbalUnavailable("Timbal answered 503."))
    shared = SharedListings(source, ttl=60)
    waiting = [asyncio.create_task(shared.list_jobs_detailed("a")) for _ in range(5)]
    await wait_until(lambda: len(source.calls) == 1)
    source.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, TimbalUnavailable) for r in results)
    source.failure = None
    assert (await shared.list_jobs_detailed("a")).jobs  # asked again
    assert len(source.calls) == 2
    await shared.aclose()


async def test_a_stale_answer_is_dropped_and_asked_for_again() -> None:
    source = SlowSource()
    source.gate.set()
    shared = SharedListings(source, ttl=0.05)
    first = await shared.list_jobs_detailed()

    async def renewed() -> bool:
        return await shared.list_jobs_detailed() is not first

    await wait_until(renewed)
    assert len(source.calls) >= 2
    await shared.aclose()


@dataclass
class StartingSource:
    """A source with a synchronous `ask` (as `OwnLoopSource` has): answers through futures
    the test settles, and notes each request as it is taken."""

    asked: list[str | None] = field(default_factory=list)
    answers: list[asyncio.Future[JobListing]] = field(default_factory=list)

    async def list_jobs(self, connector_id: str | None = None) -> list[Job]:
        raise AssertionError("SharedListings uses ask() when a source has it")

    async def list_jobs_detailed(self, connector_id: str | None = None) -> JobListing:
        raise AssertionError("SharedListings uses ask() when a source has it")

    def ask(self, connector_id: str | None = None) -> asyncio.Future[JobListing]:
        self.asked.append(connector_id)
        self.answers.append(asyncio.get_running_loop().create_future())
        return self.answers[-1]


def listing_of(connector_id: str) -> JobListing:
    return JobListing(
        jobs=[Job.model_validate(make_job("j1", connector_id=connector_id))], skipped=0
    )


async def test_start_asks_the_source_before_the_caller_awaits_anything() -> None:
    source = StartingSource()
    shared = SharedListings(source, ttl=60, clock=lambda: T0)
    answer = shared.ask("a")  # synchronous: no loop turn between the call and the request
    assert source.asked == ["a"]
    again = shared.ask("a")
    assert source.asked == ["a"]  # in flight: shared
    source.answers[0].set_result(listing_of("a"))
    listing = await shared.list_jobs_detailed("a")
    assert listing.fetched_at == T0 and listing is await answer and listing is await again
    await shared.aclose()


async def test_cancelling_one_view_of_an_answer_leaves_the_scope_working() -> None:
    source = StartingSource()
    shared = SharedListings(source, ttl=60)
    impatient = shared.ask("a")
    patient = shared.ask("a")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(impatient, 0.01)  # cancels what ask() returned
    source.answers[0].set_result(listing_of("a"))
    assert (await patient).jobs
    assert (await shared.list_jobs_detailed("a")).jobs  # kept, not broken
    assert source.asked == ["a"]
    await shared.aclose()


async def test_closing_cancels_the_calls_in_flight_and_refuses_new_requests() -> None:
    source = SlowSource()
    shared = SharedListings(source, ttl=60)
    waiting = asyncio.create_task(shared.list_jobs_detailed("a"))
    await wait_until(lambda: len(source.calls) == 1)
    await shared.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(shared) == 0
    with pytest.raises(RuntimeError, match="closed"):
        shared.ask("a")


async def test_a_cancelled_waiter_leaves_the_answer_to_the_others() -> None:
    source = StartingSource()
    shared = SharedListings(source, ttl=60)
    first = asyncio.create_task(shared.list_jobs_detailed("a"))
    second = asyncio.create_task(shared.list_jobs_detailed("a"))
    await wait_until(lambda: len(source.asked) == 1)
    first.cancel()
    source.answers[0].set_result(listing_of("a"))
    assert (await second).jobs[0].connector_id == "a"
    assert first.cancelled() and len(source.asked) == 1


async def test_a_failure_nobody_waited_for_is_dropped_quietly() -> None:
    """Asked as a command arrives, failed, and its listener never came: no "exception was
    never retrieved" from the futures left behind (asyncio reports that when they are
    collected, through the loop's exception handler)."""
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _, context: reported.append(str(context["message"])))
    try:
        source = StartingSource()
        shared = SharedListings(source, ttl=60)
        shared.ask("a")  # the view is dropped at once
        source.answers[0].set_exception(TimbalUnavailable("Timbal answered 503."))
        for _ in range(5):
            await asyncio.sleep(0)
        shared.ask("a")  # not kept: asked again
        assert source.asked == ["a", "a"]
        source.answers.clear()
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []


async def test_past_max_scopes_the_least_recently_asked_answers_are_dropped() -> None:
    source = StartingSource()
    shared = SharedListings(source, ttl=60)
    for i in range(MAX_SCOPES):
        shared.ask(f"c{i}")
        source.answers[-1].set_result(listing_of(f"c{i}"))
    await asyncio.sleep(0)
    shared.ask("c0")  # asked again: now the most recent
    assert len(source.asked) == MAX_SCOPES
    shared.ask("new")  # one scope too many: c1, the least recent, goes
    shared.ask("c0")
    assert len(source.asked) == MAX_SCOPES + 1
    shared.ask("c1")
    assert source.asked[-1] == "c1" and len(source.asked) == MAX_SCOPES + 2
    await shared.aclose()


# --- over HTTP, as Slack sends them ------------------------------------------------------------


@pytest.fixture
async def rt(bot_env: dict[str, str], redis_url: str) -> AsyncIterator[Runtime]:
    settings = load_settings(port=0, redis_url=redis_url, host="127.0.0.1")
    async with running(settings, poller=False, notifier=False) as runtime:
        yield runtime


async def test_200_concurrent_jobs_across_3_connectors_cost_at_most_6_calls(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    for i in range(30):
        fake_timbal.upsert(f"j{i}", connector_id=f"conn-{i % 3}", state="running")
    fake_timbal.delay = 0.2  # Timbal takes 200 ms to answer
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        requests = [
            slash_command(
                text=f"conn-{i % 3}",
                response_url=fake_slack.response_url(f"r{i}"),
                signing_secret=SIGNING_SECRET,
            )
            for i in range(200)
        ]
        acks = await asyncio.gather(
            *(post(http, rt.base_url + "/slack/events", r) for r in requests)
        )
    assert all(ack.status_code == 200 for ack in acks)
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 200, within=60)
    assert len(fake_timbal.requests) <= 6
    replies = fake_slack.calls_to("response_url")
    texts = {call.body["text"] for call in replies}
    assert texts == {f"10 jobs for connector `conn-{n}`: 10 running" for n in range(3)}


async def test_the_reply_says_when_the_listing_was_read(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    fake_timbal.upsert("j1", state="failed", finished_at=datetime.now(UTC).isoformat())
    request = slash_command(
        text="", response_url=fake_slack.response_url("r1"), signing_secret=SIGNING_SECRET
    )
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await post(http, rt.base_url + "/slack/events", request)).status_code == 200
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 1)
    (call,) = fake_slack.calls_to("response_url")
    footer = call.body["blocks"][-1]["elements"][0]["text"]
    assert re.search(r"as of <!date\^\d+\^\{time_secs\}\|\d\d:\d\d:\d\d UTC>$", footer), footer


async def send_with_bolt_held(
    rt: Runtime, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch, text: str
) -> asyncio.Event:
    """Send a signed `/jobs text` (acked 200) while Bolt is held back from running its
    listener, as a crowd holds it; set the returned event to let Bolt run."""
    assert rt.app is not None
    bolt_may_run = asyncio.Event()
    dispatch = rt.app.async_dispatch

    async def held(request: Any) -> Any:
        await bolt_may_run.wait()
        return await dispatch(request)

    monkeypatch.setattr(rt.app, "async_dispatch", held)
    request = slash_command(
        text=text, response_url=fake_slack.response_url("r1"), signing_secret=SIGNING_SECRET
    )
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await post(http, rt.base_url + "/slack/events", request)).status_code == 200
    return bolt_may_run


async def test_the_listing_is_asked_for_as_the_command_arrives_before_bolt_runs_its_listener(
    rt: Runtime,
    fake_slack: FakeSlack,
    fake_timbal: FakeTimbal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a crowd, Bolt reaches a listener ~100 ms after its request arrived: the Timbal
    call all of them wait for is asked by the HTTP server, so it is out by then."""
    fake_timbal.upsert("j1", connector_id="conn-1", state="running")
    bolt_may_run = await send_with_bolt_held(rt, fake_slack, monkeypatch, "conn-1")
    await wait_until(lambda: len(fake_timbal.requests) == 1, what="Timbal asked before Bolt ran")
    assert fake_timbal.requests[0]["query"] == {"connector_id": "conn-1"}
    assert fake_slack.calls_to("response_url") == []  # the listener has not run
    bolt_may_run.set()
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 1)
    assert len(fake_timbal.requests) == 1  # one call (the next test: the listener's own)


async def test_a_listing_asked_early_that_fails_answers_its_own_command(
    rt: Runtime,
    fake_slack: FakeSlack,
    fake_timbal: FakeTimbal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timbal refuses before Bolt reaches the listener: the listener answers that refusal
    instead of asking again (a failing Timbal would get every crowd twice)."""
    fake_timbal.inject(status=403, body='{"error": "forbidden"}')
    bolt_may_run = await send_with_bolt_held(rt, fake_slack, monkeypatch, "conn-1")
    await wait_until(lambda: len(fake_timbal.requests) == 1 and len(rt.listings) == 0)
    bolt_may_run.set()  # the failure came, and was not kept
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 1)
    (reply,) = fake_slack.calls_to("response_url")
    assert "cannot list jobs" in reply.body["text"]
    assert len(fake_timbal.requests) == 1


async def test_the_listings_thread_is_started_with_the_bot(rt: Runtime) -> None:
    """Before the first /jobs: building its client there would hold the bot's loop."""
    thread = rt.jobs_source.thread
    assert thread is not None and thread.is_alive()


async def test_only_a_listing_is_asked_for_early(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal
) -> None:
    """Help, a mistake and a subcommand ask Timbal for nothing."""
    async with httpx.AsyncClient(timeout=30) as http:
        for i, text in enumerate(["help", "limit=zero", "subscriptions"]):
            request = slash_command(
                text=text,
                response_url=fake_slack.response_url(f"r{i}"),
                signing_secret=SIGNING_SECRET,
            )
            assert (await post(http, rt.base_url + "/slack/events", request)).status_code == 200
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 3)
    assert fake_timbal.requests == []


async def test_a_listener_answers_only_from_a_listing_asked_for_its_own_scope() -> None:
    answer: asyncio.Future[JobListing] = asyncio.get_running_loop().create_future()
    conn_1 = JobsQuery(connector_id="conn-1")
    assert asked_for(conn_1, Asked("conn-1", answer)) is answer
    assert asked_for(JobsQuery(connector_id="conn-1", limit=5), Asked("conn-1", answer)) is answer
    assert asked_for(JobsQuery(connector_id="conn-2"), Asked("conn-1", answer)) is None
    assert asked_for(JobsQuery(), Asked("conn-1", answer)) is None  # the org, not conn-1
    assert asked_for(conn_1, Asked(None, answer)) is None  # the connector, not the org
    assert asked_for(conn_1, None) is None  # Socket Mode: nothing asked ahead
    answer.cancel()


async def test_help_is_answered_even_with_a_listing_asked_ahead(rt: Runtime) -> None:
    """Help is not a listing: what the context holds is not awaited."""
    never: asyncio.Future[JobListing] = asyncio.get_running_loop().create_future()
    outcome, _ = await answer("help", rt.services, T0, Asked(None, never))
    assert outcome == "usage" and not never.done()
    never.cancel()


def test_a_listing_made_from_another_renders_anew() -> None:
    listing = JobListing(jobs=[], skipped=0)
    assert listing.rendered("k", lambda: "first") == "first"
    assert listing.rendered("k", lambda: "second") == "first"  # kept with the listing
    stamped = replace(listing, fetched_at=T0)
    assert stamped.rendered("k", lambda: "second") == "second"
