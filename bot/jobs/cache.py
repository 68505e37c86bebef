"""`/jobs` listings shared between requests: one upstream call per scope at a time, and its
answer reused for `ttl` seconds (JOBS_CACHE_SECONDS).

During an incident many people run the same `/jobs` at once; each used to cost one Timbal
call. Here identical requests in flight share one call (single-flight: the first starts it,
the others await the same task), and its answer stays fresh for `ttl` seconds, stamped with
`fetched_at` so the reply can say "as of 14:03:07". A failure is shared by the requests that
waited for it but not kept: the next request asks again. At most `MAX_SCOPES` scopes (the
org, or one connector; users type connector ids) are kept, each only while fresh: a stale
listing is dropped on time, not on the next request (an org listing can be large).

async-lru's `alru_cache` does all of that (shared task, TTL timers, LRU bound, failures not
cached); this module only stamps the answer and gives the /jobs path a `JobsSource`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from async_lru import alru_cache

from bot.domain.models import Job
from bot.timbal import JobListing, JobsSource

MAX_SCOPES = 64


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SharedListings:
    """A `JobsSource` in front of another: single-flight per scope, and a short cache."""

    def __init__(
        self, source: JobsSource, *, ttl: float, clock: Callable[[], datetime] = _utcnow
    ) -> None:
        self._source = source
        self._clock = clock
        self._cached = alru_cache(maxsize=MAX_SCOPES, ttl=ttl)(self._fetch)
        self.upstream_calls = 0

    async def list_jobs(self, connector_id: str | None = None) -> list[Job]:
        return (await self.list_jobs_detailed(connector_id)).jobs

    async def list_jobs_detailed(self, connector_id: str | None = None) -> JobListing:
        return await self._cached(connector_id)

    async def _fetch(self, connector_id: str | None) -> JobListing:
        self.upstream_calls += 1
        listing = await self._source.list_jobs_detailed(connector_id)
        return replace(listing, fetched_at=self._clock())

    async def aclose(self) -> None:
        """Cancel the pending expiries (the runtime closes this before its loop ends)."""
        await self._cached.cache_close()
