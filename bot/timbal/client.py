"""The Timbal API client: `GET /orgs/{org_id}/connectors/jobs` into `Job` models.

One shared `httpx.AsyncClient` (explicit timeouts, bearer key, `User-Agent`); the GET is
retried on timeouts, connection errors, 5xx and 429 only, with exponential back-off and
jitter, honouring `Retry-After` (capped). The listing is parsed as it streams
(`bot.timbal.listing`): any size is read, up to a ceiling (`max_response_bytes`,
TIMBAL_MAX_RESPONSE_MB) past which it is refused with `TimbalResponseTooLarge`; items that
fail validation are skipped, counted and logged. Each attempt has one overall deadline,
`timeout`, for the whole exchange, body included: httpx's timeouts are per read, so an answer
trickled a byte at a time would otherwise hold the caller for as long as it lasts. The
retries are bounded on their own (`retries` attempts, back-off capped).

`scan_jobs(start)` hands each job to a sink that `start()` makes afresh for every attempt
(the poller's differ keeps only what changed); `list_jobs_detailed()` keeps them all.

Errors: see `bot.timbal.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol, runtime_checkable
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from bot import __version__
from bot.domain.models import Job
from bot.reach import address, cause
from bot.redaction import excerpt
from bot.timbal.errors import (
    TimbalAuthError,
    TimbalBadResponse,
    TimbalError,
    TimbalResponseTooLarge,
    TimbalUnavailable,
)
from bot.timbal.listing import (
    LOGGED_BODY_CHARS,
    MB,
    JobList,
    JobListing,
    Scan,
    Sink,
    read_listing,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_RESPONSE_MB = 256  # ~500,000 jobs; memory does not grow with it (streamed)
MAX_ERROR_BODY_BYTES = 4096  # enough of an error page to log its start
MAX_RETRY_DELAY = 10.0  # seconds; caps both Retry-After and the exponential back-off
RETRYABLE_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

HEADERS = {"Accept": "application/json", "User-Agent": f"timbal-jobs-bot/{__version__}"}
Sleep = Callable[[float], Awaitable[None]]


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now` (delta-seconds or HTTP-date), capped; None if absent."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - now).total_seconds()
        except (TypeError, ValueError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_DELAY)


async def _read_bounded(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the (decoded) body, and whether there was more."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


class JobsSource(Protocol):
    """Anything that lists the org's jobs (the client, or a test double)."""

    async def list_jobs(self, connector_id: str | None = None) -> list[Job]: ...

    async def list_jobs_detailed(self, connector_id: str | None = None) -> JobListing: ...


@runtime_checkable
class JobsScanner(Protocol):
    """A source that can stream the listing into a sink (the client; see `scan_jobs`)."""

    async def scan_jobs(
        self, start: Callable[[], Sink], connector_id: str | None = None
    ) -> Scan[Sink]: ...


async def scan_jobs(
    source: JobsSource, start: Callable[[], Sink], connector_id: str | None = None
) -> Scan[Sink]:
    """Stream `source`'s listing into a sink; a source that can only list (a test double)
    feeds its list."""
    if isinstance(source, JobsScanner):
        return await source.scan_jobs(start, connector_id)
    listing = await source.list_jobs_detailed(connector_id)
    sink = start()
    for job in listing.jobs:
        sink.add(job)
    return Scan(sink=sink, jobs=len(listing.jobs), skipped=listing.skipped, size=0)


class TimbalClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: SecretStr,
        org_id: str,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.25,
        sleep: Sleep = asyncio.sleep,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_MB * MB,
    ) -> None:
        base = httpx.URL(base_url)
        if base.scheme not in ("http", "https") or not base.host or base.userinfo:
            raise ValueError("base_url must be an http(s) URL without credentials")
        if org_id in ("", ".", ".."):
            raise ValueError(f"org_id {org_id!r} cannot name an org in a URL path")
        prefix = base.raw_path.split(b"?")[0].rstrip(b"/")
        org = quote(org_id, safe="").encode("ascii")
        self.url = base.copy_with(raw_path=prefix + b"/orgs/" + org + b"/connectors/jobs")
        self.org_id = org_id
        self._api_key = api_key
        self._timeout = httpx.Timeout(connect=timeout, read=timeout, write=timeout, pool=timeout)
        self._deadline = timeout  # the whole exchange, body included
        self._retries = max(retries, 0)
        self._backoff = backoff
        self._sleep = sleep
        self._max_response_bytes = max_response_bytes
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=self._timeout)

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it (an injected one is the caller's)."""
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> TimbalClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def list_jobs(self, connector_id: str | None = None) -> list[Job]:
        """The org's jobs (one connector's if given); malformed items are skipped and logged."""
        return (await self.list_jobs_detailed(connector_id)).jobs

    async def list_jobs_detailed(self, connector_id: str | None = None) -> JobListing:
        """Like `list_jobs`, with the count of skipped items."""
        scan = await self.scan_jobs(JobList, connector_id)
        return JobListing(jobs=scan.sink.jobs, skipped=scan.skipped)

    async def scan_jobs(
        self, start: Callable[[], Sink], connector_id: str | None = None
    ) -> Scan[Sink]:
        """Stream the listing into `start()`'s sink, a new one for each attempt."""
        # The connector only ever travels as a query parameter, never in the path.
        params = {} if connector_id is None else {"connector_id": connector_id}
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}
        request = self._http.build_request(
            "GET", self.url, params=params, headers=headers | HEADERS, timeout=self._timeout
        )
        attempts = self._retries + 1
        for attempt in range(attempts):
            try:
                return await self._attempt(request, start)
            except _Retry as retry:
                if attempt + 1 == attempts:
                    raise retry.error from retry.__cause__
                delay = retry.delay if retry.delay is not None else self._delay(attempt)
                what = f"GET {request.url} attempt {attempt + 1}/{attempts}"
                why = retry.error.reason.rstrip(".")
                log.warning("timbal: %s: %s; retrying in %.2fs", what, why, delay)
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int) -> float:
        """Exponential back-off with jitter: between half and all of backoff * 2**attempt."""
        return min(self._backoff * 2.0**attempt * random.uniform(0.5, 1.0), MAX_RETRY_DELAY)

    async def _attempt(self, request: httpx.Request, start: Callable[[], Sink]) -> Scan[Sink]:
        """One exchange, body included, within the deadline."""
        try:
            async with asyncio.timeout(self._deadline):
                return await self._exchange(request, start)
        except TimeoutError as exc:
            where = address(str(request.url))
            late = (
                f"Timbal did not answer in time ({where}: no whole answer in {self._deadline:g}s)."
            )
            raise _Retry(TimbalUnavailable(late)) from exc

    async def _exchange(self, request: httpx.Request, start: Callable[[], Sink]) -> Scan[Sink]:
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TimeoutException as exc:
            where = address(str(request.url))
            raise _Retry(TimbalUnavailable(f"Timbal did not answer in time ({where}).")) from exc
        except RETRYABLE_ERRORS as exc:
            raise _Retry(self._unreachable(request, exc)) from exc
        except httpx.HTTPError as exc:
            raise TimbalError(f"The request to Timbal failed ({type(exc).__name__}).") from exc
        try:
            return await self._handle(response, start)
        except httpx.DecodingError as exc:
            raise TimbalBadResponse("Timbal sent a body that could not be decoded.") from exc
        except RETRYABLE_ERRORS as exc:  # the connection broke while reading the body
            raise _Retry(TimbalUnavailable("Timbal stopped answering mid-response.")) from exc
        finally:
            await response.aclose()

    @staticmethod
    def _unreachable(request: httpx.Request, exc: Exception) -> TimbalUnavailable:
        """'Timbal could not be reached at api.timbal.ai:443 (DNS lookup failed).'"""
        where = address(str(request.url))
        return TimbalUnavailable(f"Timbal could not be reached at {where} ({cause(exc)}).")

    async def _handle(self, response: httpx.Response, start: Callable[[], Sink]) -> Scan[Sink]:
        status = response.status_code
        if not 200 <= status < 300:
            head, _ = await _read_bounded(response, MAX_ERROR_BODY_BYTES)
            text = repr(excerpt(head.decode("utf-8", "replace"), LOGGED_BODY_CHARS, self._redact))
            log.warning("timbal: GET %s answered %d: %s", response.request.url, status, text)
            raise self._status_error(response)
        try:
            declared = response.headers.get("Content-Length", "")
            plain = "Content-Encoding" not in response.headers
            if plain and declared.isdigit() and int(declared) > self._max_response_bytes:
                raise TimbalResponseTooLarge(self._max_response_bytes, status=status)
            return await read_listing(
                response.aiter_bytes(),
                start(),
                limit=self._max_response_bytes,
                status=status,
                redact=self._redact,
            )
        except TimbalResponseTooLarge:
            log.warning(
                "timbal: GET %s answered more than %d bytes (TIMBAL_MAX_RESPONSE_MB); refused",
                response.request.url,
                self._max_response_bytes,
            )
            raise

    def _redact(self, text: str) -> str:
        """Keep the key out of logged server text (an error page may echo our headers)."""
        key = self._api_key.get_secret_value()
        return text.replace(key, "[redacted]") if key else text

    def _status_error(self, response: httpx.Response) -> TimbalError | _Retry:
        status = response.status_code
        if status == 401:
            return TimbalAuthError("Timbal rejected the API key (401).", status=401)
        if status == 403:
            return TimbalAuthError(
                f"The API key cannot list jobs for org {self.org_id} (403).", status=403
            )
        if status == 429 or status >= 500:
            delay = None
            if status in (429, 503):
                delay = retry_after_seconds(response.headers.get("Retry-After"), datetime.now(UTC))
            return _Retry(TimbalUnavailable(f"Timbal answered {status}.", status=status), delay)
        return TimbalBadResponse(f"Timbal answered an unexpected {status}.", status=status)


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying; `error` is what the caller gets."""

    def __init__(self, error: TimbalError, delay: float | None = None) -> None:
        super().__init__(error.reason)
        self.error = error
        self.delay = delay
