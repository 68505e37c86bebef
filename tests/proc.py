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
