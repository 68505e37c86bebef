"""The command line, run as users run it: a subprocess against the fakes and our own Redis."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import httpx

from tests.conftest import free_port
from tests.fakes import FakeSlack, FakeTimbal, make_job
from tests.proc import clean_env, run_cli


def _env(bot_env: dict[str, str], redis_url: str, **extra: str) -> dict[str, str]:
    return clean_env(**{**bot_env, "REDIS_URL": redis_url, **extra})


async def test_check_all_pass(
    bot_env: dict[str, str], redis_url: str, fake_timbal: FakeTimbal, fake_slack: FakeSlack
) -> None:
    fake_timbal.jobs = [make_job("j1"), make_job("j2")]
    done = await run_cli("check", env=_env(bot_env, redis_url))
    assert done.code == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("✓ settings")
    assert any(line.startswith("✓ redis: reachable (standalone), version") for line in lines)
    assert any(line.startswith("✓ timbal:") and "2 jobs" in line for line in lines)
    assert any(line.startswith("✓ slack:") and fake_slack.bot_user_id in line for line in lines)


async def test_check_reports_a_cluster_as_a_cluster(
    bot_env: dict[str, str],
    redis_cluster_url: str,
    fake_timbal: FakeTimbal,
    fake_slack: FakeSlack,
) -> None:
    done = await run_cli("check", env=_env(bot_env, redis_cluster_url, REDIS_CLUSTER="true"))
    assert done.code == 0, done.stdout + done.stderr
    assert "✓ redis: reachable (cluster of 3 masters), version" in done.stdout


async def test_check_reports_each_failure(
    bot_env: dict[str, str], fake_timbal: FakeTimbal, fake_slack: FakeSlack
) -> None:
    env = _env(
        bot_env,
        f"redis://127.0.0.1:{free_port()}/0",
        TIMBAL_ORG_ID="someone_else",
        SLACK_BOT_TOKEN="xoxb-revoked",
    )
    done = await run_cli("check", env=env)
    assert done.code == 1
    out = done.stdout
    assert "✗ redis: could not reach 127.0.0.1:" in out and "(connection refused)" in out
    assert "✗ timbal:" in out and "someone_else" in out
    assert "✗ slack: auth.test failed: invalid_auth" in out
    for secret in ("xoxb-revoked", fake_timbal.api_key, bot_env["SLACK_SIGNING_SECRET"]):
        assert secret not in out + done.stderr


async def test_missing_setting_names_the_variable(bot_env: dict[str, str]) -> None:
    env = clean_env(**{k: v for k, v in bot_env.items() if k != "TIMBAL_ORG_ID"})
    done = await run_cli("check", env=env)
    assert done.code == 2
    assert "TIMBAL_ORG_ID" in done.stderr
    assert "Traceback" not in done.stderr


async def test_malformed_setting_names_the_variable(bot_env: dict[str, str]) -> None:
    env = clean_env(**{**bot_env, "POLL_INTERVAL_SECONDS": "0.1"})
    done = await run_cli("run", env=env)
    assert done.code == 2
    assert "POLL_INTERVAL_SECONDS" in done.stderr


async def test_jobs_prints_a_table(
    bot_env: dict[str, str], redis_url: str, fake_timbal: FakeTimbal
) -> None:
    fake_timbal.jobs = [
        make_job("j1", connector_id="pg", state="running", rows_emitted=1200),
        make_job("j2", connector_id="s3", state="failed", message="AccessDenied\nmore"),
    ]
    done = await run_cli("jobs", "s3", env=_env(bot_env, redis_url))
    assert done.code == 0, done.stderr
    assert "CONNECTOR" in done.stdout
    assert "s3" in done.stdout and "failed" in done.stdout
    assert "AccessDenied" in done.stdout
    assert "pg" not in done.stdout.split("\n", 1)[1]
    assert fake_timbal.requests[-1]["query"] == {"connector_id": "s3"}


async def test_poll_once_dry_run_then_commit(
    bot_env: dict[str, str], redis_url: str, fake_timbal: FakeTimbal
) -> None:
    env = _env(bot_env, redis_url)
    fake_timbal.jobs = [make_job("j1", state="running")]
    first = await run_cli("poll", "--once", env=env)
    assert first.code == 0, first.stderr
    assert "baseline=True" in first.stdout
    fake_timbal.upsert("j1", state="failed", finished_at="2026-11-29T04:00:00+00:00")
    dry = await run_cli("poll", "--once", "--dry-run", env=env)
    assert "failed" in dry.stdout and "dry run" in dry.stdout
    real = await run_cli("poll", "--once", env=env)
    assert "committed: 1 enqueued" in real.stdout
    again = await run_cli("poll", "--once", env=env)
    assert "events=0" in again.stdout


async def test_run_serves_and_stops_cleanly_on_sigterm(
    bot_env: dict[str, str], redis_url: str, fake_timbal: FakeTimbal
) -> None:
    env = _env(bot_env, redis_url, PORT="0", HOST="127.0.0.1", LOG_LEVEL="INFO")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not (up := [line for line in lines if "timbal-jobs-bot up:" in line]):
                lines.append((await proc.stderr.readline()).decode())
        port = int(re.search(r"port=(\d+)", up[0]).group(1))  # type: ignore[union-attr]
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{port}/healthz")
        assert health.status_code == 200
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rest = (await proc.stderr.read()).decode()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    assert "timbal-jobs-bot stopped" in rest
    assert "Traceback" not in "".join(lines) + rest


async def test_poll_once_with_redis_down_says_so(
    bot_env: dict[str, str], fake_timbal: FakeTimbal
) -> None:
    env = _env(bot_env, "redis://:s3cret-pass@127.0.0.1:" + str(free_port()) + "/0")
    done = await run_cli("poll", "--once", env=env)
    assert done.code == 1
    assert "Redis failed: ConnectionError" in done.stderr
    assert "Traceback" not in done.stderr
    assert "s3cret-pass" not in done.stderr + done.stdout
