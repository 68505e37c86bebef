"""End to end in one process: fake Timbal -> real runtime -> fake Slack."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import httpx
import pytest

from bot.app.config import load_settings
from bot.app.runtime import running
from tests.fakes import FakeSlack, FakeTimbal, make_job
from tests.waiting import wait_until

CHANNEL = "C0ALERTS"


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def test_queued_running_failed_posts_exactly_once(
    bot_env: dict[str, str],
    redis_url: str,
    fake_timbal: FakeTimbal,
    fake_slack: FakeSlack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings = load_settings(
        port=0, host="127.0.0.1", redis_url=redis_url, poll_interval_seconds=1.0
    )
    fake_timbal.jobs = [make_job("old", state="failed", finished_at=_now(), message="old")]
    fake_timbal.upsert("j1", connector_id="pg-orders", dest_table="public.orders", state="queued")
    async with running(settings, commands=False) as rt:

        def polls() -> int:
            return len(fake_timbal.requests)

        await wait_until(lambda: polls() >= 1, what="baseline poll")
        fake_timbal.upsert("j1", state="running", started_at=_now(), rows_emitted=500)
        seen = polls()
        await wait_until(lambda: polls() >= seen + 1, what="poll of running")
        fake_timbal.upsert(
            "j1",
            state="failed",
            finished_at=_now(),
            duration_ms=61_000,
            rows_emitted=1200,
            message="permission denied for table orders <!channel> & <https://evil|x>",
        )
        await fake_slack.wait_for(lambda f: len(f.posted(CHANNEL)) >= 1, within=15)
        seen = polls()
        await wait_until(lambda: polls() >= seen + 2, what="two more polls")
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{rt.base_url}/metrics")).text
            ready = await http.get(f"{rt.base_url}/readyz")
    posted = fake_slack.posted(CHANNEL)
    assert len(posted) == 1, [m["text"] for m in posted]
    message = posted[0]
    rendered = str(message["blocks"]) + message["text"]
    assert "pg-orders" in rendered and "failed" in rendered
    assert "public.orders" in rendered
    assert "permission denied for table orders" in rendered
    assert "<!channel>" not in rendered and "&lt;!channel&gt;" in rendered
    assert "<https://evil|x>" not in rendered
    assert "old" not in message["text"]  # the baseline posted nothing
    assert 'tjb_polls_total{outcome="ok"}' in metrics
    assert 'tjb_messages_total{outcome="sent"} 1.0' in metrics
    assert ready.status_code == 200, ready.text
    sent = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alert sent")]
    assert len(sent) == 1
    assert "kind=failed" in sent[0]
    assert f"channel={CHANNEL}" in sent[0]


async def test_readyz_reports_unreachable_redis(
    bot_env: dict[str, str], fake_timbal: FakeTimbal
) -> None:
    from tests.conftest import free_port

    settings = load_settings(
        port=0, host="127.0.0.1", redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    async with running(settings, poller=False, notifier=False) as rt, httpx.AsyncClient() as http:
        health = await http.get(f"{rt.base_url}/healthz")
        ready = await http.get(f"{rt.base_url}/readyz")
    assert health.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["ok"] is False
