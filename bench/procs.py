"""Processes the benchmarks start: the stand-in Timbal of `bench.listing_server`, and helpers."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx


@contextlib.asynccontextmanager
async def _child(module: str, *args: str, within: float) -> AsyncIterator[list[str]]:
    """Run `python -m module args`; yield the words of the first line it prints after its
    first word (the ports it listens on); kill it afterwards."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), within)
        yield line.decode().split()[1:]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@contextlib.asynccontextmanager
async def listing_server(jobs: int) -> AsyncIterator[str]:
    """Start `bench.listing_server` with `jobs` jobs; yield its base URL."""
    async with _child("bench.listing_server", "--jobs", str(jobs), within=120) as ports:
        yield f"http://127.0.0.1:{int(ports[0])}"


async def advance(http: httpx.AsyncClient, base_url: str) -> None:
    (await http.post(f"{base_url}/_bench/advance")).raise_for_status()


class BotProcess:
    """`python -m bot run ARGS` with `env`, its output in a log file; SIGKILL-able."""

    def __init__(self, env: dict[str, str], *args: str, log: str) -> None:
        self.env = env
        self.args = args
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with open(self.log, "ab") as out:  # noqa: ASYNC230 - opening a log file, once
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                *self.args,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                await self.kill()


async def until(check: Callable[[], Awaitable[bool] | bool], within: float, what: str) -> None:
    """Poll `check` until it holds (benchmarks may wait; they are not tests)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {within}s")
        await asyncio.sleep(0.01)


def log_file(name: str) -> str:
    """Where a benchmark's bot process writes its log (read it when a figure looks wrong)."""
    return str(Path(tempfile.gettempdir()) / f"timbal-bench-{name}.log")


@contextlib.asynccontextmanager
async def slack_process(delay: float) -> AsyncIterator[tuple[str, str, str]]:
    """Start `bench.slack_process`; yield the base URLs of its Slack, Timbal and sink."""
    async with _child("bench.slack_process", "--delay", str(delay), within=60) as ports:
        slack, timbal, sink = (f"http://127.0.0.1:{port}" for port in ports[:3])
        yield slack, timbal, sink
