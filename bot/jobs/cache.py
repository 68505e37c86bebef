"""`/jobs` listings shared between requests: one upstream call per scope at a time, and its
answer reused for `ttl` seconds (JOBS_CACHE_SECONDS).

During an incident many people run the same `/jobs` at once; each used to cost one Timbal
call. Here identical requests in flight share one call (single-flight: the first starts it,
the others await the same future), and its answer stays fresh for `ttl` seconds, stamped
with `fetched_at` so the reply can say "as of 14:03:07". A failure is shared by the requests
that waited for it but not kept: the next request asks again. At most `MAX_SCOPES` scopes
(the org, or one connector; users type connector ids) are kept, each only while fresh: a
stale listing is dropped on time, not on the next request (an org listing can be large).

`start(scope)` is synchronous: the HTTP server calls it as a slash command arrives, before
the command's listener runs, so the call that the listener will wait for is already asked.
A source with a synchronous `start` of its own (`OwnLoopSource`) has the request out before
`start` returns.

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
class StartsListings(Protocol):
    """A source that takes a request synchronously and answers through a future."""

    def start(self, connector_id: str | None = None) -> asyncio.Future[JobListing]: ...


@dataclass
class _Entry:
    answer: asyncio.Future[JobListing]  # the stamped listing, shared by every waiter
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
        self.upstream_calls = 0

    async def list_jobs(self, connector_id: str | None = None) -> list[Job]:
        return (await self.list_jobs_detailed(connector_id)).jobs

    async def list_jobs_detailed(self, connector_id: str | None = None) -> JobListing:
        # Shielded: one waiter cancelled does not cancel the answer the others wait for.
        return await asyncio.shield(self.start(connector_id))

    def start(self, connector_id: str | None = None) -> asyncio.Future[JobListing]:
        """The scope's listing: kept, in flight, or asked for now."""
        entry = self._entries.get(connector_id)
        if entry is not None:
            self._entries.move_to_end(connector_id)
            return entry.answer
        self.upstream_calls += 1
        if isinstance(self._source, StartsListings):
            call: asyncio.Future[JobListing] = self._source.start(connector_id)
        else:
            call = asyncio.ensure_future(self._source.list_jobs_detailed(connector_id))
        entry = _Entry(asyncio.get_running_loop().create_future())
        call.add_done_callback(lambda done: self._answered(connector_id, entry, done))
        self._entries[connector_id] = entry
        self._evict()
        return entry.answer

    def _answered(self, scope: str | None, entry: _Entry, call: asyncio.Future[JobListing]) -> None:
        answer = entry.answer
        failure = None if call.cancelled() else call.exception()
        if call.cancelled() or failure is not None:
            self._forget(scope, entry)  # not kept: the next request asks again
            if not answer.done():
                if failure is None:
                    answer.cancel()
                else:
                    answer.set_exception(failure)
            _retrieved(answer)  # a failure no request waited for is not an error to log
            return
        if answer.done():  # closed meanwhile
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
        """Drop every kept listing and its timer; calls in flight answer `CancelledError`."""
        for scope, entry in list(self._entries.items()):
            self._forget(scope, entry)
            if not entry.answer.done():
                entry.answer.cancel()


def _retrieved(answer: asyncio.Future[JobListing]) -> None:
    if not answer.cancelled():
        answer.exception()
