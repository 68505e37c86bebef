"""`/jobs` listings shared between requests: one upstream call per scope at a time, and its
answer reused for `ttl` seconds (JOBS_CACHE_SECONDS).

During an incident many people run the same `/jobs` at once; each used to cost one Timbal
call. Here identical requests in flight share one call (single-flight: the first starts it,
the others await the same future), and its answer stays fresh for `ttl` seconds, stamped
with `fetched_at` so the reply can say "as of 14:03:07". A failure is shared by the requests
that waited for it but not kept: the next request asks again. At most `MAX_SCOPES` scopes
(the org, or one connector; users type connector ids) are kept, each only while fresh: a
stale listing is dropped on time, not on the next request (an org listing can be large).

`ask(scope)` is synchronous: the HTTP server calls it as a slash command arrives, before
the command's listener runs, and hands the answer to that listener (`bot.app.runtime`), so
the call the listener waits for is already asked, and a failure reaches the requests that
asked for it even when it came before their listeners. A source with a synchronous `ask` of
its own (`AsksListings`: `OwnLoopSource`) has the request out before `ask` returns. The call
runs to its end even if every waiter leaves (its answer is kept for the next ones).

Hand-written (~60 lines) instead of async-lru's `alru_cache`, which this module used before:
its cached function is a coroutine, so a call could only start a loop turn later, and under a
crowd of slash commands one turn takes tens of milliseconds.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from bot.domain.models import Job
from bot.timbal import JobListing, JobsSource

MAX_SCOPES = 64


def _utcnow() -> datetime:
    return datetime.now(UTC)


@runtime_checkable
class AsksListings(Protocol):
    """A source that takes a request synchronously and answers through a future."""

    def ask(self, connector_id: str | None = None) -> asyncio.Future[JobListing]: ...


@dataclass
class _Entry:
    call: asyncio.Future[JobListing]  # the source's answer
    answer: asyncio.Future[JobListing]  # the stamped listing; waiters get it shielded
    expiry: asyncio.TimerHandle | None = None  # set once answered: drops the entry on time


class SharedListings:
    """A `JobsSource` in front of another: single-flight per scope, and a short cache."""

    def __init__(
        self, source: JobsSource, *, ttl: float, clock: Callable[[], datetime] = _utcnow
    ) -> None:
        self._source = source
        self._ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str | None, _Entry] = OrderedDict()
        self._closed = False
        self.upstream_calls = 0

    def __len__(self) -> int:
        """Scopes kept or in flight."""
        return len(self._entries)

    async def list_jobs(self, connector_id: str | None = None) -> list[Job]:
        return (await self.list_jobs_detailed(connector_id)).jobs

    async def list_jobs_detailed(self, connector_id: str | None = None) -> JobListing:
        return await self.ask(connector_id)

    def ask(self, connector_id: str | None = None) -> asyncio.Future[JobListing]:
        """The scope's listing: kept, in flight, or asked for now.

        While the answer is pending each caller gets its own view of it (`asyncio.shield`):
        cancelling that view, or a waiter cancelled, leaves the answer to the others (once
        answered, the view is the answer itself, which a cancel no longer changes). Nobody
        has to await it: a failure nobody awaited is dropped without a "never retrieved" log.
        """
        if self._closed:
            raise RuntimeError("the /jobs listings are closed")
        entry = self._entries.get(connector_id)
        if entry is None:
            entry = self._call(connector_id)
        else:
            self._entries.move_to_end(connector_id)
        view = asyncio.shield(entry.answer)
        view.add_done_callback(_retrieved)
        return view

    def _call(self, scope: str | None) -> _Entry:
        if isinstance(self._source, AsksListings):
            call: asyncio.Future[JobListing] = self._source.ask(scope)
        else:
            call = asyncio.ensure_future(self._source.list_jobs_detailed(scope))
        self.upstream_calls += 1
        entry = _Entry(call, asyncio.get_running_loop().create_future())
        entry.answer.add_done_callback(_retrieved)
        call.add_done_callback(lambda done: self._answered(scope, entry))
        self._entries[scope] = entry
        self._evict()
        return entry

    def _answered(self, scope: str | None, entry: _Entry) -> None:
        call, answer = entry.call, entry.answer
        if answer.done() or call.cancelled() or call.exception() is not None:
            self._forget(scope, entry)  # a failure is not kept: the next request asks again
            if not answer.done():
                failure = None if call.cancelled() else call.exception()
                if failure is None:
                    answer.cancel()
                else:
                    answer.set_exception(failure)
            return
        answer.set_result(replace(call.result(), fetched_at=self._clock()))
        if self._entries.get(scope) is entry:
            entry.expiry = asyncio.get_running_loop().call_later(
                self._ttl, self._forget, scope, entry
            )

    def _forget(self, scope: str | None, entry: _Entry) -> None:
        if self._entries.get(scope) is entry:
            del self._entries[scope]
        if entry.expiry is not None:
            entry.expiry.cancel()

    def _evict(self) -> None:
        """Past MAX_SCOPES, drop the least recently asked answered scopes."""
        while len(self._entries) > MAX_SCOPES:
            for scope, entry in self._entries.items():
                if entry.answer.done():
                    self._forget(scope, entry)
                    break
            else:
                return  # every kept scope is in flight: they end on their own

    async def aclose(self) -> None:
        """Refuse new requests; drop every kept listing and its timer; cancel the calls in
        flight (their waiters get `CancelledError`)."""
        self._closed = True
        calls = []
        for scope, entry in list(self._entries.items()):
            self._forget(scope, entry)
            if not entry.answer.done():
                entry.answer.cancel()
            if not entry.call.done():
                entry.call.cancel()
                calls.append(entry.call)
        if calls:
            await asyncio.wait(calls)


def _retrieved(answer: asyncio.Future[JobListing]) -> None:
    if not answer.cancelled():
        answer.exception()
