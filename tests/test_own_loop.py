"""bot.timbal.own_loop: a source called on a loop of its own thread takes the request at once,
even while the caller's loop is busy; cancelling, closing and a source that cannot be built."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import pytest

from bot.domain.models import Job
from bot.timbal import JobListing
from bot.timbal.own_loop import THREAD_NAME, OwnLoopSource
from tests.fakes import make_job


@dataclass
class ThreadSource:
    """Notes where and when it is called; answers when `release` is set."""

    asked: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    called_in: list[str] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    closed_in: list[str] = field(default_factory=list)

    async def list_jobs_detailed(self, connector_id: str | None = None) -> JobListing:
        self.called_in.append(threading.current_thread().name)
        self.asked.set()
        try:
            while not self.release.is_set():  # noqa: ASYNC110 - set from another thread
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        job = Job.model_validate(make_job("j1", connector_id=connector_id or "any"))
        return JobListing(jobs=[job], skipped=0)

    async def aclose(self) -> None:
        self.closed_in.append(threading.current_thread().name)


async def test_the_request_is_taken_while_the_callers_loop_is_busy() -> None:
    inner = ThreadSource()
    source = OwnLoopSource(lambda: inner)
    answer = source.ask("a")
    # The caller's loop does not turn (a crowd of requests being acked): the thread's does.
    assert inner.asked.wait(5), "the call waited for the caller's loop"
    assert inner.called_in == [THREAD_NAME]
    inner.release.set()
    listing = await answer
    assert [job.connector_id for job in listing.jobs] == ["a"]
    assert (await source.list_jobs("b"))[0].connector_id == "b"
    await source.aclose()
    assert inner.closed_in == [THREAD_NAME]
    assert source.thread is not None and not source.thread.is_alive()


async def test_cancelling_the_answer_cancels_the_call_in_the_thread() -> None:
    inner = ThreadSource()
    source = OwnLoopSource(lambda: inner)
    answer = source.ask("a")
    assert inner.asked.wait(5)
    answer.cancel()
    assert await asyncio.to_thread(inner.cancelled.wait, 5)
    await source.aclose()


async def test_closing_cancels_the_calls_in_flight_and_refuses_new_ones() -> None:
    inner = ThreadSource()
    source = OwnLoopSource(lambda: inner)
    answer = source.ask("a")
    assert inner.asked.wait(5)
    await source.aclose()
    assert inner.cancelled.is_set() and inner.closed_in == [THREAD_NAME]
    with pytest.raises(asyncio.CancelledError):
        await answer
    with pytest.raises(RuntimeError, match="closed"):
        source.ask("a")


async def test_open_starts_the_thread_before_the_first_request() -> None:
    inner = ThreadSource()
    inner.release.set()
    source = OwnLoopSource(lambda: inner)
    await source.open()
    assert source.thread is not None and source.thread.is_alive()
    assert (await source.ask("a")).jobs and inner.called_in == [THREAD_NAME]
    await source.aclose()


async def test_a_source_that_fails_to_close_is_logged_and_its_thread_still_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Failing(ThreadSource):
        async def aclose(self) -> None:
            raise OSError("socket already gone")

    inner = Failing()
    inner.release.set()
    source = OwnLoopSource(lambda: inner)
    assert (await source.ask("a")).jobs
    await source.aclose()  # does not raise: the runtime has more to close after it
    assert "failed to close" in caplog.text
    assert source.thread is not None and not source.thread.is_alive()


async def test_an_unused_source_starts_no_thread_and_closes_at_once() -> None:
    before = threading.active_count()
    source = OwnLoopSource(lambda: ThreadSource())
    assert source.thread is None and threading.active_count() == before
    started = time.monotonic()
    await source.aclose()
    assert time.monotonic() - started < 1


async def test_a_source_that_cannot_be_built_fails_the_call_and_is_built_again() -> None:
    attempts: list[int] = []
    inner = ThreadSource()
    inner.release.set()

    def make() -> ThreadSource:
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("no such Timbal")
        return inner

    source = OwnLoopSource(make)
    with pytest.raises(ValueError, match="no such Timbal"):
        source.ask("a")
    assert source.thread is None
    assert (await source.ask("a")).jobs
    assert len(attempts) == 2
    await source.aclose()
