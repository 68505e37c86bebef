"""Reading Timbal's listing: `{"jobs": [JobView, …]}` into `Job` models, as the bytes arrive.

The body is parsed as it streams, one item at a time: each item of `jobs` is decoded by the
standard library's C scanner (`json`), validated into a `Job` and handed to a `JobSink` at
once, so memory does not grow with the listing unless the sink keeps the jobs (`JobList`
does, for `/jobs`; the poller's differ keeps only the changes). There is no fixed cap on the
size: `limit` is a ceiling, in decoded bytes, beyond which the answer is refused with
`TimbalResponseTooLarge`.

Hand-written (`_Text`, `_walk`): the walk over the top-level object and the array, ~60
lines, because ijson, the library for this, keeps a prefix string per nesting level in its
C backend, so 100,000 brackets cost it gigabytes, where `json` raises RecursionError; the
values themselves, keys and items, are still decoded by `json`.

Items that fail `Job` validation are skipped, counted and logged, so one bad job cannot
hide the others; a listing whose items are *all* malformed is a contract break and raises
`TimbalBadResponse` (an empty answer would read as "no jobs" to users and as "every job
vanished" to the poller), and so does an answer that is not `{"jobs": [...]}`.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from pydantic import ValidationError

from bot.domain.models import Job
from bot.redaction import excerpt
from bot.timbal.errors import TimbalBadResponse, TimbalResponseTooLarge

R = TypeVar("R")
log = logging.getLogger("bot.timbal.client")  # one logger for everything the client says

LOGGED_HEAD_BYTES = 4096  # what of a body that is not JSON is excerpted (then cut) in the log
LOGGED_BODY_CHARS = 200
MB = 1024 * 1024

NO_LIST = "Timbal answered without a list of jobs."
NOT_JSON = "Timbal's answer was not JSON."


RENDERS_KEPT = 32  # replies rendered from one listing and kept with it, at most


@dataclass(frozen=True, slots=True)
class JobListing:
    jobs: list[Job]
    skipped: int  # items that failed validation (each logged at WARNING)
    # When the answer was read (set by whoever keeps listings, e.g. the /jobs cache).
    fetched_at: datetime | None = field(default=None, compare=False)
    _renders: dict[Hashable, Any] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )  # not carried over by dataclasses.replace: a new listing renders anew

    def rendered(self, key: Hashable, render: Callable[[], R]) -> R:
        """`render()`, once per `key` for this listing: the requests that share one listing
        (the /jobs cache) share its replies too, instead of each rendering the same jobs."""
        if key in self._renders:
            kept: R = self._renders[key]
            return kept
        made = render()
        if len(self._renders) < RENDERS_KEPT:
            self._renders[key] = made
        return made


class JobSink(Protocol):
    """Takes the listing's valid jobs one by one, in the order of the answer."""

    def add(self, job: Job) -> None: ...


Sink = TypeVar("Sink", bound=JobSink)


@dataclass(frozen=True, slots=True)
class Scan(Generic[Sink]):
    """A listing read into `sink`: what it kept, the items skipped, the bytes read."""

    sink: Sink
    jobs: int  # valid jobs handed to the sink
    skipped: int
    size: int  # decoded bytes of the answer (0 when the listing did not come over HTTP)


@dataclass
class JobList:
    """The sink that keeps every job (what `/jobs` and the CLI list)."""

    jobs: list[Job] = field(default_factory=list)

    def add(self, job: Job) -> None:
        self.jobs.append(job)


@dataclass
class JobCount:
    """The sink that keeps nothing (the benchmark's floor: fetch and parse, nothing else)."""

    jobs: int = 0

    def add(self, job: Job) -> None:
        self.jobs += 1


def _summary(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<item>'}: {e['msg']}" for e in errors)


class _Items:
    """Validates items into jobs for the sink; counts and logs the ones that fail."""

    def __init__(self, sink: JobSink, redact: Callable[[str], str]) -> None:
        self.sink = sink
        self.redact = redact
        self.seen = 0
        self.skipped = 0

    def take(self, item: Any) -> None:
        index = self.seen
        self.seen += 1
        try:
            job = Job.model_validate(item)
        except ValidationError as exc:
            self.skipped += 1
            item_id = repr(item.get("id") if isinstance(item, dict) else None)
            shown = excerpt(item_id, 100, self.redact)
            log.warning("timbal: skipped job item %d (id=%s): %s", index, shown, _summary(exc))
            return
        self.sink.add(job)

    def check(self) -> None:
        if self.skipped and self.skipped == self.seen:
            raise TimbalBadResponse(
                f"Timbal listed {self.skipped} jobs, none in the documented shape."
            )


def parse_listing(payload: Any, *, redact: Callable[[str], str] = str) -> JobListing:
    """An already decoded body as a listing: bad items skipped and logged, a bad shape raised."""
    if not isinstance(payload, dict) or not isinstance(payload.get("jobs"), list):
        raise TimbalBadResponse(NO_LIST)
    items = _Items(JobList(), redact)
    for item in payload["jobs"]:
        items.take(item)
    items.check()
    assert isinstance(items.sink, JobList)
    return JobListing(jobs=items.sink.jobs, skipped=items.skipped)


class _NotJSON(Exception):
    """Internal: the body is not JSON (or nests deeper than `json` recurses)."""


_BLANK = re.compile(r"[ \t\n\r]*")
# The decoder's C scanner: one value at an index, and where it ends (json.loads' own engine).
_SCAN: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]
_NEAR_END = 16  # a value that fails this close to the end of what was read may be cut off


class _Text:
    """The body as text, read chunk by chunk: `text[pos:]` is what is not parsed yet.

    Bytes are counted against the ceiling as they arrive; the first ones are kept for the
    log of an answer that is not JSON.
    """

    def __init__(self, chunks: AsyncIterator[bytes], limit: int) -> None:
        self._chunks = chunks
        self._limit = limit
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()  # as json.loads(bytes)
        self.text = ""
        self.pos = 0
        self.size = 0
        self.head = b""
        self.done = False

    async def more(self) -> bool:
        """Append the next chunk to what is left of the text (or learn that the body ended);
        False once the end was already known."""
        if self.done:
            return False
        chunk = b""
        while not chunk:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self.done = True
                break
        self.size += len(chunk)
        if self.size > self._limit:
            raise TimbalResponseTooLarge(self._limit)
        if len(self.head) < LOGGED_HEAD_BYTES:
            self.head += chunk[: LOGGED_HEAD_BYTES - len(self.head)]
        try:
            added = self._decoder.decode(chunk, self.done)
        except UnicodeDecodeError:
            raise _NotJSON from None
        self.text = self.text[self.pos :] + added
        self.pos = 0
        return True

    async def peek(self) -> str:
        """The next character that is not blank, not consumed; "" at the end of the body."""
        while True:
            match = _BLANK.match(self.text, self.pos)
            assert match is not None  # `*` always matches
            self.pos = match.end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not await self.more():
                return ""

    async def take(self, allowed: str) -> str:
        """Consume the next character that is not blank; it must be one of `allowed`."""
        char = await self.peek()
        if not char or char not in allowed:
            raise _NotJSON
        self.pos += 1
        return char

    async def value(self) -> Any:
        """Decode and consume the JSON value at the cursor (reading on while it is cut off)."""
        while True:
            await self.peek()
            try:
                value, end = _SCAN(self.text, self.pos)
            except StopIteration as stop:
                cut = len(self.text) - int(stop.value) <= _NEAR_END
            except json.JSONDecodeError as exc:
                cut = len(self.text) - exc.pos <= _NEAR_END or exc.msg.startswith(
                    "Unterminated string"
                )
            except RecursionError:
                raise _NotJSON from None
            else:
                # A number may go on in the next chunk ("12" of "12.5"): only a delimiter
                # after it, or the end of the body, says it is whole.
                number = isinstance(value, int | float)
                if self.done or not (number and len(self.text) - end <= _NEAR_END):
                    self.pos = end
                    return value
                cut = True
            if not cut or not await self.more():
                raise _NotJSON


async def _walk(text: _Text, items: _Items) -> bool:
    """Hand each item of the top-level `jobs` array to `items`; whether there was one."""
    first = await text.peek()
    if first != "{":
        if first:
            await text.value()  # JSON, but not an object: not a listing
            await _end(text)
            return False
        raise _NotJSON  # an empty body
    text.pos += 1
    listed = False
    if await text.peek() == "}":
        text.pos += 1
    else:
        while True:
            key = await text.value()
            if not isinstance(key, str):
                raise _NotJSON
            await text.take(":")
            if key == "jobs" and await text.peek() == "[":
                text.pos += 1
                await _items(text, items)
                listed = True
            else:
                await text.value()  # another member (or `jobs` that is not a list)
                listed = listed and key != "jobs"
            if await text.take(",}") == "}":
                break
    await _end(text)
    return listed


async def _items(text: _Text, items: _Items) -> None:
    if await text.peek() == "]":
        text.pos += 1
        return
    while True:
        items.take(await text.value())
        if await text.take(",]") == "]":
            return


async def _end(text: _Text) -> None:
    if await text.peek():
        raise _NotJSON  # something after the value


async def read_listing(
    chunks: AsyncIterator[bytes],
    sink: Sink,
    *,
    limit: int,
    status: int | None = None,
    redact: Callable[[str], str] = str,
) -> Scan[Sink]:
    """Parse a streamed body into `sink`, item by item; see the module docstring."""
    text = _Text(chunks, limit)
    items = _Items(sink, redact)
    try:
        listed = await _walk(text, items)
    except _NotJSON:
        shown = text.head.decode("utf-8", "replace")
        log.warning(
            "timbal: answer %s is not JSON: %r", status, excerpt(shown, LOGGED_BODY_CHARS, redact)
        )
        raise TimbalBadResponse(NOT_JSON, status=status) from None
    if not listed:
        raise TimbalBadResponse(NO_LIST, status=status)
    items.check()
    return Scan(sink=sink, jobs=items.seen - items.skipped, skipped=items.skipped, size=text.size)
