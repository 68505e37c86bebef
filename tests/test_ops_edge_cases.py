"""Operational edge cases: settings that used to fail late, a CLI crash, fake
fidelity."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.config import SettingsError, load_settings
from bot.app.services import classifier_from
from bot.domain.models import Job
from bot.jobs.table import format_jobs_table
from tests.fakes import FakeSlack
from tests.test_deploy_files import compose_bot_check, dockerfile_check

BASE = {
    "timbal_api_key": "tbl-secret-key-123",
    "timbal_org_id": "org_1",
    "slack_bot_token": "xoxb-secret-bot-token",
    "slack_signing_secret": "signing-secret-456",
}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("TIMBAL_", "SLACK_", "REDIS_", "POLL_")) or name in ("PORT", "HOST"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2-redis-pw@redis:notaport/0",
        "redis://:hunter2-redis-pw@redis:99999/0",
        "redis://:hunter2-redis-pw@redis/0?socket_timeout=soon",
    ],
)
def test_malformed_redis_url_fails_at_start_naming_it(url: str) -> None:
    # These passed validation and then crashed with a bare ValueError traceback when the
    # client was built (in `run`, and in `check` after it had printed "settings: valid").
    with pytest.raises(SettingsError) as info:
        load_settings(**BASE, redis_url=url)
    assert "REDIS_URL" in str(info.value)
    assert "hunter2-redis-pw" not in str(info.value)


def _job(**fields: Any) -> Job:
    base: dict[str, Any] = {
        "id": "j1",
        "connector_id": "pg",
        "kb_uid": "kb",
        "dest_table": "public.t",
        "mode": "incremental",
        "state": "failed",
        "rows_emitted": 1,
        "created_at": NOW - timedelta(minutes=5),
        "updated_at": NOW,
        "finished_at": NOW,
    }
    return Job.model_validate(base | fields)


@pytest.mark.parametrize("message", ["   ", "\n\n", " \t\n "])
def test_cli_table_survives_a_blank_failure_message(message: str) -> None:
    classifier = classifier_from(load_settings(**BASE))
    table = format_jobs_table([_job(message=message)], now=NOW, classifier=classifier, limit=5)
    assert "showing 1 of 1" in table
    assert "j1:" not in table  # nothing to show for a blank message


def test_cli_table_shows_the_first_non_blank_line_of_a_failure_message() -> None:
    classifier = classifier_from(load_settings(**BASE))
    job = _job(message="\n\n  disk full on /var\ntraceback…")
    table = format_jobs_table([job], now=NOW, classifier=classifier, limit=5)
    assert "j1: disk full on /var" in table


async def test_fake_history_returns_metadata_only_when_asked(fake_slack: FakeSlack) -> None:
    # Slack's conversations.history: include_all_metadata "defaults to false".
    client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.base_url)
    metadata = {"event_type": "job_alert", "event_payload": {"event_id": "e1"}}
    await client.chat_postMessage(channel="C1", text="alert", metadata=metadata)
    plain = await client.conversations_history(channel="C1")
    assert [m.get("metadata") for m in plain["messages"]] == [None]
    rich = await client.conversations_history(channel="C1", include_all_metadata=True)
    assert [m["metadata"]["event_payload"] for m in rich["messages"]] == [{"event_id": "e1"}]


async def test_fake_history_excludes_oldest_unless_inclusive(fake_slack: FakeSlack) -> None:
    client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.base_url)
    posted = await client.chat_postMessage(channel="C1", text="alert")
    ts = posted["ts"]
    assert (await client.conversations_history(channel="C1", oldest=ts))["messages"] == []
    inclusive = await client.conversations_history(channel="C1", oldest=ts, inclusive=True)
    assert [m["ts"] for m in inclusive["messages"]] == [ts]


@pytest.mark.parametrize("source", ["compose", "dockerfile"])
def test_health_check_with_a_blank_port_asks_the_port_the_bot_listens_on(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `PORT=` in .env counts as unset for the bot (it listens on 3000), and env_file passes
    # it on as an empty string, which the health check must read the same way.
    root = Path(__file__).resolve().parent.parent
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    argv = compose_bot_check(compose) if source == "compose" else dockerfile_check()
    check = argv[argv.index("-c") + 1]
    spy = "import urllib.request as u\nu.urlopen = lambda url, timeout=None: print(url)\n"
    result = subprocess.run(
        [sys.executable, "-c", spy + check],
        env={"PORT": "", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("PORT", "")
    port = load_settings(**BASE).port  # what the bot listens on with the same environment
    assert result.stdout.strip() == f"http://127.0.0.1:{port}/healthz"
