"""`check`, `jobs` and `dead-letters` tell the truth and need only what they use; run as
users run them (a subprocess) against the fakes and our own Redis."""

from __future__ import annotations

import pytest

from bot.domain.states import StateClass
from bot.jobs.table import state_cell
from tests.fakes import FakeSlack, FakeTimbal, make_job
from tests.proc import clean_env, run_cli
from tests.redis_server import free_port

TIMBAL_ONLY = ("TIMBAL_API_URL", "TIMBAL_API_KEY", "TIMBAL_ORG_ID")


def timbal_only(bot_env: dict[str, str], **extra: str) -> dict[str, str]:
    """Only the Timbal settings: no Slack token, no signing secret, no Redis."""
    return clean_env(**{k: v for k, v in bot_env.items() if k in TIMBAL_ONLY}, **extra)


# --- check ----------------------------------------------------------------------------------


async def test_check_calls_the_embedded_store_what_it_is(
    bot_env: dict[str, str], fake_timbal: FakeTimbal, fake_slack: FakeSlack
) -> None:
    done = await run_cli("check", env=clean_env(**bot_env))  # no REDIS_URL
    assert done.code == 0, done.stdout + done.stderr
    assert "✓ redis: embedded, not persisted (set REDIS_URL for production)" in done.stdout


async def test_check_names_the_address_and_cause_when_timbal_refuses_connections(
    bot_env: dict[str, str], fake_slack: FakeSlack
) -> None:
    port = free_port()
    env = clean_env(**{**bot_env, "TIMBAL_API_URL": f"http://127.0.0.1:{port}"})
    done = await run_cli("check", env=env)
    assert done.code == 1
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("✗ timbal")]
    assert f"127.0.0.1:{port}" in line and "connection refused" in line, line
    assert "Traceback" not in done.stderr
    assert ".;" not in done.stderr  # the log line used to read "…could not be reached.; retrying"


async def test_check_names_a_dns_failure(bot_env: dict[str, str], fake_slack: FakeSlack) -> None:
    env = clean_env(**{**bot_env, "TIMBAL_API_URL": "https://no-such-host.invalid"})
    done = await run_cli("check", env=env)
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("✗ timbal")]
    assert "no-such-host.invalid:443" in line and "DNS lookup failed" in line, line


async def test_check_names_the_address_and_cause_when_slack_refuses_connections(
    bot_env: dict[str, str], fake_timbal: FakeTimbal
) -> None:
    port = free_port()
    env = clean_env(**{**bot_env, "SLACK_API_URL": f"http://127.0.0.1:{port}/api/"})
    done = await run_cli("check", env=env)
    assert done.code == 1
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("✗ slack")]
    assert line == f"✗ slack: could not reach 127.0.0.1:{port} (connection refused)"


# --- jobs -------------------------------------------------------------------------------------


def seed(fake_timbal: FakeTimbal) -> None:
    fake_timbal.jobs = [
        make_job("j-ok", connector_id="pg", state="succeeded", finished_at="2026-01-01T00:00:00Z"),
        make_job("j-to", connector_id="pg", state="timed_out", finished_at="2026-01-01T00:00:00Z"),
        make_job("j-run", connector_id="s3", state="running"),
    ]


async def test_jobs_needs_only_the_timbal_settings(
    bot_env: dict[str, str], fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    done = await run_cli("jobs", env=timbal_only(bot_env))
    assert done.code == 0, done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].startswith("STATE")
    assert any(r.startswith("succeeded ") for r in rows)
    assert "succeeded (succeeded)" not in done.stdout
    assert any(r.startswith("timed_out (failure) ") for r in rows)
    assert rows[-1] == "showing 3 of 3"


@pytest.mark.parametrize("limit", ["0", "26", "500", "-1", "x"])
async def test_jobs_refuses_the_limits_that_slash_jobs_refuses(
    bot_env: dict[str, str], fake_timbal: FakeTimbal, limit: str
) -> None:
    seed(fake_timbal)
    done = await run_cli("jobs", "--limit", limit, env=timbal_only(bot_env))
    assert done.code == 2
    assert done.stderr.startswith("timbal-jobs-bot: limit must be a whole number from 1 to 25")
    assert fake_timbal.requests == []


async def test_jobs_filters_by_a_class_like_slash_jobs(
    bot_env: dict[str, str], fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    done = await run_cli("jobs", "--state", "failed", "--limit", "1", env=timbal_only(bot_env))
    assert done.code == 0, done.stderr
    assert "timed_out (failure)" in done.stdout and "succeeded" not in done.stdout
    assert done.stdout.splitlines()[-1] == "showing 1 of 1"


async def test_jobs_says_what_could_not_be_read_and_suggests_a_connector(
    bot_env: dict[str, str], fake_timbal: FakeTimbal
) -> None:
    seed(fake_timbal)
    broken = make_job("j-broken")
    del broken["rows_emitted"]
    fake_timbal.jobs.append(broken)
    listing = await run_cli("jobs", env=timbal_only(bot_env))
    assert listing.stdout.splitlines()[-1] == (
        "1 item in Timbal's answer could not be read (logged)."
    )
    typo = await run_cli("jobs", "s4", env=timbal_only(bot_env))
    assert typo.stdout.splitlines()[:2] == ["No jobs for connector s4.", "Did you mean s3?"]


# --- dead-letters -------------------------------------------------------------------------------


async def test_dead_letters_without_redis_says_there_is_nothing_to_read(
    bot_env: dict[str, str],
) -> None:
    env = clean_env(TIMBAL_ORG_ID=bot_env["TIMBAL_ORG_ID"])  # nothing else is needed
    done = await run_cli("dead-letters", env=env)
    assert done.code == 2
    assert "0 dead letter" not in done.stdout
    assert done.stderr.startswith("timbal-jobs-bot: there is no persistent store to read")


async def test_dead_letters_needs_only_the_org_and_redis(
    bot_env: dict[str, str], redis_url: str
) -> None:
    env = clean_env(TIMBAL_ORG_ID=bot_env["TIMBAL_ORG_ID"], REDIS_URL=redis_url)
    done = await run_cli("dead-letters", env=env)
    assert done.code == 0, done.stderr
    assert done.stdout.strip() == "0 dead letter(s)"


@pytest.mark.parametrize(
    ("state", "cls", "cell"),
    [
        ("succeeded", StateClass.SUCCEEDED, "succeeded"),
        ("failed", StateClass.FAILED, "failed"),
        ("error", StateClass.FAILED, "error (failure)"),
        ("done", StateClass.SUCCEEDED, "done (success)"),
        ("canceled", StateClass.CANCELLED, "canceled (cancelled)"),
        ("running", StateClass.ACTIVE, "running"),
        ("weird", StateClass.OTHER, "finished (state: weird)"),
    ],
)
def test_state_cell(state: str, cls: StateClass, cell: str) -> None:
    assert state_cell(state, cls) == cell
