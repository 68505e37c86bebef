"""A `JobsSource` that runs another on an event loop of its own, in a thread of its own.

Why: when a crowd of slash commands arrives, each turn of the bot's loop runs every request
that is ready in it (tens of milliseconds for a few hundred), and an HTTP call needs several
turns (connect, write, read) before its request even leaves. `/jobs` answers can only follow
Timbal's, so the call that all of them wait for must not queue behind them: on its own loop
it is on the wire at once, and the bot's loop only gets the parsed answer back.

`ask(connector_id)` is synchronous: the request is handed to the thread before the caller
awaits anything. The source is built in the thread (`make()`), so its HTTP client (a
connection pool of its own) belongs to that loop alone; `aclose()` closes it there and ends
the thread. `open()` starts the thread without blocking the caller's loop (the runtime
calls it at start); otherwise the first `ask` starts it, blocking for the ~30 ms it takes.

Hand-written: the standard library's `run_coroutine_threadsafe` and `wrap_future` do the
crossing; what is here is the thread's start and stop (~40 lines).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from bot.domain.models import Job
from bot.timbal.listing import JobListing

T = TypeVar("T")
log = logging.getLogger(__name__)

THREAD_NAME = "timbal-jobs"
CLOSE_SECONDS = 10.0  # for the source's own aclose() in the thread


class ClosableSource(Protocol):
    async def list_jobs_detailed(self, connector_id: str | None = None) -> JobListing: ...

    async def aclose(self) -> None: ...


class OwnLoopSource:
    """`make()`'s source, called on a loop in a thread of its own (see the module doc)."""

    def __init__(self, make: Callable[[], ClosableSource], *, name: str = THREAD_NAME) -> None:
        self._make = make
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._source: ClosableSource | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- the JobsSource --------------------------------------------------------------------
    async def list_jobs(self, connector_id: str | None = None) -> list[Job]:
        return (await self.list_jobs_detailed(connector_id)).jobs

    async def list_jobs_detailed(self, connector_id: str | None = None) -> JobListing:
        return await self.ask(connector_id)

    def ask(self, connector_id: str | None = None) -> asyncio.Future[JobListing]:
        """Ask now (the thread has the request when this returns); await the answer later.

        Cancelling the returned future cancels the call in the thread.
        """
        loop, source = self._running()
        return self._submit(loop, source.list_jobs_detailed(connector_id))

    # --- the thread ------------------------------------------------------------------------
    async def open(self) -> None:
        """Start the thread and build the source there, off the caller's loop."""
        await asyncio.to_thread(self._running)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def _running(self) -> tuple[asyncio.AbstractEventLoop, ClosableSource]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the source is closed")
            if self._loop is None:
                self._loop, self._source = self._spawn()
            assert self._source is not None
            return self._loop, self._source

    def _spawn(self) -> tuple[asyncio.AbstractEventLoop, ClosableSource]:
        loop = asyncio.new_event_loop()
        built: list[ClosableSource] = []
        failed: list[BaseException] = []
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                built.append(self._make())
            except BaseException as exc:  # handed to the caller, who raises it
                failed.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            self._thread.join()
            self._thread = None
            raise failed[0]
        return loop, built[0]

    @staticmethod
    def _submit(loop: asyncio.AbstractEventLoop, call: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, loop))

    async def aclose(self) -> None:
        """Close the source in its thread, then stop the thread's loop and join it."""
        with self._lock:
            self._closed = True
            loop, source, thread = self._loop, self._source, self._thread
        if loop is None or source is None or thread is None:
            return
        try:
            await asyncio.wait_for(self._submit(loop, _shut_down(source)), CLOSE_SECONDS)
        except TimeoutError:
            log.warning("%s: the source did not close within %.0fs", self._name, CLOSE_SECONDS)
        except Exception:  # the runtime closes what comes after this either way
            log.exception("%s: the source failed to close", self._name)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join, CLOSE_SECONDS)
            if thread.is_alive():
                log.warning("%s: the thread did not end within %.0fs", self._name, CLOSE_SECONDS)


async def _shut_down(source: ClosableSource) -> None:
    """In the thread: cancel the calls still running there, then close the source."""
    this = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not this]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    await source.aclose()
