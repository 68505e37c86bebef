"""Run the bot's console entry point as a real subprocess (what users and Docker run)."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass


def clean_env(**settings: str) -> dict[str, str]:
    """The parent's environment minus every bot setting, plus `settings` (names upper-cased)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TIMBAL_", "SLACK_", "REDIS_"))
        and k not in {"ALERT_CHANNEL", "PORT", "HOST", "LOG_LEVEL", "LOG_FORMAT"}
    }
    env.update({k.upper(): v for k, v in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str


async def run_cli(*args: str, env: dict[str, str], within: float = 60.0) -> Finished:
    """Run `python -m bot ARGS` to completion while the caller's event loop keeps serving fakes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(), err.decode())


@dataclass
class Running:
    """A `python -m bot ...` process still running; its output is collected as it comes."""

    proc: asyncio.subprocess.Process
    lines: list[str]
    readers: list[asyncio.Task[None]]

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def stop(self, sig: int, within: float) -> int:
        """Send `sig` and wait at most `within` seconds for the exit code (killed after that)."""
        self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
        finally:
            await asyncio.gather(*self.readers, return_exceptions=True)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(*self.readers, return_exceptions=True)


async def spawn_cli(*args: str, env: dict[str, str]) -> Running:
    """Start `python -m bot ARGS`; stdout and stderr are read into one list of lines."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []

    async def read(stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        async for line in stream:
            lines.append(line.decode(errors="replace"))

    readers = [asyncio.create_task(read(proc.stdout)), asyncio.create_task(read(proc.stderr))]
    return Running(proc, lines, readers)
