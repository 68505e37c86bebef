"""The `/jobs` listing, usage and error replies: tables for content, properties for limits."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block, ContextBlock, HeaderBlock, SectionBlock

from bot.blockkit import MAX_BLOCKS, MAX_SECTION_TEXT, clip, date_token, fit_blocks
from bot.domain.models import Job
from bot.domain.states import StateClass, StateClassifier
from bot.jobs.listing import (
    RenderedMessage,
    render_error,
    render_jobs_listing,
    render_usage,
    state_counts,
)
from bot.jobs.query import MAX_LIMIT, USAGE, JobsQuery
from bot.sim.slack_api import block_errors
from tests.fakes import make_job
from tests.strategies import any_stamps, hostile_jobs, nasty_text

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CLASSIFIER = StateClassifier()


def job(job_id: str, minutes_ago: int = 0, **fields: Any) -> Job:
    created = NOW - timedelta(minutes=minutes_ago)
    base: dict[str, Any] = {"created_at": created.isoformat(), "updated_at": NOW.isoformat()}
    base.update(fields)
    return Job.model_validate(make_job(job_id, **base))


def finished(job_id: str, state: str, minutes_ago: int = 0, **fields: Any) -> Job:
    start = NOW - timedelta(minutes=minutes_ago)
    return job(
        job_id,
        minutes_ago,
        state=state,
        started_at=start.isoformat(),
        finished_at=(start + timedelta(seconds=90)).isoformat(),
        **fields,
    )


def render(jobs: list[Job], query: JobsQuery | None = None) -> RenderedMessage:
    return render_jobs_listing(
        jobs, query=query or JobsQuery(), classifier=CLASSIFIER, now=NOW, org_id="org_test"
    )


def texts(message: RenderedMessage) -> list[str]:
    """Every text in the blocks, in order."""
    found: list[str] = []
    for block in message.blocks:
        if "text" in block:
            found.append(block["text"]["text"])
        found += [e["text"] for e in block.get("elements", []) if "text" in e]
    return found


def job_sections(message: RenderedMessage) -> list[str]:
    return [t for t in texts(message) if "\njob " in t or " · job `" in t]


def assert_valid(message: RenderedMessage) -> None:
    assert block_errors(message.blocks) == []
    for data in message.blocks:
        model = Block.parse(data)
        assert model is not None
        model.validate_json()  # slack_sdk's own limits; raises when broken
    assert len(message.text) <= 3000
    json.dumps(message.blocks)


# --- content tables ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "emoji", "label"),
    [
        ("failed", ":x:", "*failed*"),
        ("timed_out", ":x:", "*timed_out*"),
        ("succeeded", ":white_check_mark:", "*succeeded*"),
        ("cancelled", ":no_entry_sign:", "*cancelled*"),
        ("weird_end", ":grey_question:", "*finished (state: weird_end)*"),
    ],
)
def test_terminal_state_classes(state: str, emoji: str, label: str) -> None:
    message = render([finished("j1", state)])
    (section,) = job_sections(message)
    assert section.startswith(f"{emoji} {label} · `postgres-main` → `public.orders`")
    assert_valid(message)


@pytest.mark.parametrize(
    ("state", "emoji"),
    [("running", ":arrows_counterclockwise:"), ("queued", ":hourglass_flowing_sand:")],
)
def test_active_states(state: str, emoji: str) -> None:
    (section,) = job_sections(render([job("j1", state=state)]))
    assert section.startswith(f"{emoji} *{state}*")


def test_a_job_shows_its_figures_times_and_ids() -> None:
    j = finished(
        "job-42", "succeeded", 5, mode="full", rows_emitted=1234567, rows_per_sec=2345.6,
        duration_ms=90_000, sync_id="sync-9", dest_table="analytics.events",
    )  # fmt: skip
    (section,) = job_sections(render([j]))
    assert "`analytics.events`" in section
    assert "full · 1,234,567 rows · 2,346/s · 1m 30s" in section
    assert f"started {date_token(j.started_at)}" in section  # type: ignore[arg-type]
    assert f"finished {date_token(j.finished_at)}" in section  # type: ignore[arg-type]
    assert "sync `sync-9`" in section
    assert "job `job-42`" in section


def test_date_tokens_are_slack_tokens_with_a_utc_fallback() -> None:
    paris = timezone(timedelta(hours=1))
    start = datetime(2025, 3, 1, 13, 0, tzinfo=paris)
    (section,) = job_sections(render([job("j", state="running", started_at=start.isoformat())]))
    assert f"<!date^{int(start.timestamp())}^" in section
    assert "|2025-03-01 12:00 UTC>" in section  # the fallback is in UTC, as it says


def test_a_manual_run_and_a_queued_job() -> None:
    queued = job("q", 3, state="queued", sync_id=None)
    (section,) = job_sections(render([queued]))
    assert "manual run" in section
    assert f"created {date_token(queued.created_at)}" in section
    assert "queued 3m 00s" in section
    assert "finished" not in section


def test_live_duration_is_time_so_far() -> None:
    running = job("r", 30, state="running", started_at=(NOW - timedelta(minutes=20)).isoformat())
    (section,) = job_sections(render([running]))
    assert "20m 00s so far" in section


def test_live_duration_from_the_api_wins() -> None:
    running = job("r", 30, state="running", started_at=NOW.isoformat(), duration_ms=61_000)
    assert "1m 01s so far" in job_sections(render([running]))[0]


def test_finished_without_duration_is_finished_minus_started() -> None:
    done = finished("d", "succeeded", duration_ms=None)
    assert "1m 30s" in job_sections(render([done]))[0]
    assert "so far" not in job_sections(render([done]))[0]


def test_a_clock_behind_the_api_shows_no_negative_duration() -> None:
    future = job("f", state="running", started_at=(NOW + timedelta(hours=1)).isoformat())
    section = job_sections(render([future]))[0]
    assert " · —" in section and "so far" not in section


def test_summary_counts_by_state_failed_first() -> None:
    jobs = [
        *(finished(f"s{i}", "succeeded", i) for i in range(12)),
        *(job(f"r{i}", i, state="running") for i in range(3)),
        finished("f1", "failed", 1),
        finished("c1", "cancelled", 1),
        finished("o1", "weird", 1),
    ]
    message = render(jobs)
    summary = texts(message)[1]
    assert summary == (
        "*18 jobs* · :x: 1 failed · :arrows_counterclockwise: 3 running · "
        ":white_check_mark: 12 succeeded · :no_entry_sign: 1 cancelled · "
        ":grey_question: 1 finished (state: weird)"
    )
    assert message.text.startswith("18 jobs in org `org_test`: 1 failed · 3 running · 12 succeeded")


def test_state_counts_keep_the_api_names() -> None:
    jobs = [finished("a", "Failed"), finished("b", "failed"), finished("c", "failed")]
    assert state_counts(jobs, CLASSIFIER) == [
        (StateClass.FAILED, "failed", 2),
        (StateClass.FAILED, "Failed", 1),
    ]


def test_summary_names_at_most_ten_states() -> None:
    jobs = [job(f"j{i}", state=f"state{i:02d}") for i in range(14)]
    summary = texts(render(jobs))[1]
    assert "state09" in summary and "state10" not in summary
    assert summary.endswith("+4 more states")


def test_limit_newest_first_and_the_footer() -> None:
    jobs = [job(f"j{i:02d}", minutes_ago=i, state="running") for i in range(16)]
    message = render(list(reversed(jobs)), JobsQuery(limit=3))
    sections = job_sections(message)
    assert [s.split("job `")[1].split("`")[0] for s in sections] == ["j00", "j01", "j02"]
    footer = message.blocks[-1]
    assert footer["type"] == "context"
    assert footer["elements"][0]["text"] == (
        "Showing 3 of 16 jobs, newest first · org `org_test` · `limit=25` shows more"
    )
    assert texts(message)[1].startswith("*16 jobs*")


def test_the_limit_is_bounded_whatever_the_query_says() -> None:
    jobs = [job(f"j{i:02d}", minutes_ago=i) for i in range(60)]
    message = render(jobs, JobsQuery(limit=1000))
    assert len(job_sections(message)) == MAX_LIMIT
    assert_valid(message)


def test_state_filter_lists_matching_jobs_and_counts_all() -> None:
    jobs = [finished("f", "failed", 1), finished("t", "timed_out", 2), job("r", state="running")]
    message = render(jobs, JobsQuery(connector_id="postgres-main", state="failed"))
    assert len(job_sections(message)) == 2
    assert texts(message)[1].startswith("*3 jobs* · :x: 1 failed · :x: 1 timed_out")
    # `failed` is a class: named as one, with the states of it that the listing holds
    assert message.blocks[-1]["elements"][0]["text"] == (
        "Showing 2 of 2 jobs · failures: `failed`, `timed_out` (3 in all), newest first · "
        "connector `postgres-main`"
    )
    assert message.blocks[0]["text"]["text"] == (
        "Jobs · connector postgres-main · failures: failed, timed_out"
    )


@pytest.mark.parametrize(
    ("query", "sentence"),
    [
        (JobsQuery(), "No jobs in org `org_test`."),
        (JobsQuery(connector_id="pg"), "No jobs for connector `pg`."),
        (JobsQuery(connector_id="pg", state="failed"), "No jobs for connector `pg`."),
    ],
)
def test_empty_listing(query: JobsQuery, sentence: str) -> None:
    message = render([], query)
    assert texts(message)[1] == sentence
    assert message.text == sentence
    assert_valid(message)


def test_no_job_matches_the_filter() -> None:
    message = render([job("r", state="running")], JobsQuery(state="failed"))
    # No failure in the listing: the class is named with the states the settings put in it.
    (sentence,) = [t for t in texts(message) if t.startswith("No jobs")]
    assert sentence.startswith("No jobs in org `org_test` match failures: `aborted`, `crashed`")
    assert message.text.startswith("No jobs in org `org_test` match failures:")
    assert texts(message)[1].startswith("*1 job* · ")


def test_a_failure_shows_its_message_in_a_code_block() -> None:
    failed = finished("f", "failed", message="  psycopg.OperationalError: timeout  ")
    section = job_sections(render([failed]))[0]
    assert section.endswith("\n```psycopg.OperationalError: timeout```")
    ok = finished("s", "succeeded", message="all good")
    assert "all good" not in job_sections(render([ok]))[0]


def test_a_huge_failure_message_keeps_its_head_and_tail() -> None:
    text = "HEAD " + "x" * 50_000 + " TAIL"
    section = job_sections(render([finished("f", "failed", message=text)]))[0]
    assert len(section) <= 1500
    body = section.split("```")[1]
    assert body.startswith("HEAD") and body.endswith("TAIL") and "\n…\n" in body


# --- escaping -------------------------------------------------------------------------

HOSTILE = "<!channel> <https://evil.example|click> & <@U1> `code` *b*"


def test_api_text_is_escaped_everywhere() -> None:
    hostile = finished(
        HOSTILE, "failed", connector_id=HOSTILE, dest_table=HOSTILE, mode=HOSTILE,
        sync_id=HOSTILE, message=HOSTILE + "\n```\n<!here>",
    )  # fmt: skip
    other = job("o", state=HOSTILE)
    message = render([hostile, other])
    dumped = json.dumps(message.blocks) + message.text
    for raw in ("<!channel>", "<https://evil", "<@U1>", "<!here>", "& "):
        assert raw not in dumped
    assert "&lt;!channel&gt;" in dumped and "&amp;" in dumped
    section = job_sections(message)[-1]
    assert section.count("```") == 2  # the message cannot close its code block early
    assert_valid(message)


def test_every_mrkdwn_text_is_verbatim() -> None:
    message = render([finished("f", "failed", message="see https://x.example #general @here")])
    for block in message.blocks:
        objects = [block["text"]] if "text" in block else block.get("elements", [])
        for obj in objects:
            assert obj["type"] == "plain_text" or obj["verbatim"] is True


def test_control_characters_are_dropped() -> None:
    message = render([job("j\x00\x1b[31m", state="run\x07ning", dest_table="t\x08")])
    dumped = json.dumps(message.blocks)
    for ch in ("\\u0000", "\\u001b", "\\u0007", "\\u0008"):
        assert ch not in dumped


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("abc", 10, "abc"),
        ("a<b", 10, "a&lt;b"),
        ("&&&&", 12, "&amp;&amp;…"),  # cut after escaping, never inside an entity
        ("x" * 20, 5, "xxxx…"),
        ("abc", 0, ""),
    ],
)
def test_clip_bounds_the_escaped_length(text: str, limit: int, expected: str) -> None:
    assert clip(text, limit) == expected


@pytest.mark.parametrize("limit", range(10, 40))
def test_clip_in_the_middle_never_splits_an_entity(limit: int) -> None:
    out = clip("<" + "&" * 100 + ">", limit, middle=True)
    assert len(out) <= limit
    assert re.fullmatch(r"(&lt;)?(&amp;)*\n…\n(&amp;)*(&gt;)?", out)


@given(st.text(max_size=3000), st.integers(-1, 2000), st.booleans())
def test_clip_never_exceeds_its_limit(text: str, limit: int, middle: bool) -> None:
    out = clip(text, limit, middle=middle)
    assert len(out) <= max(limit, 0)
    assert "<" not in out and ">" not in out
    assert re.search(r"&(?!amp;|lt;|gt;)", out) is None  # every & starts a whole entity


# --- usage, error, the guard -----------------------------------------------------------


def test_usage_with_and_without_a_reason() -> None:
    plain = render_usage()
    assert len(plain.blocks) == 1
    assert "`/jobs [connector] [state=&lt;state&gt;] [limit=&lt;n&gt;]`" in texts(plain)[0]
    assert plain.text == "Usage: /jobs [connector] [state=&lt;state&gt;] [limit=&lt;n&gt;]"
    with_reason = render_usage("A connector id cannot contain `<`, `>` or `&` (got `<x>`).")
    assert texts(with_reason)[0] == (
        ":warning: A connector id cannot contain `&lt;`, `&gt;` or `&amp;` (got `&lt;x&gt;`)."
    )
    assert with_reason.text.startswith("A connector id cannot contain")
    assert len(USAGE) < MAX_SECTION_TEXT
    assert_valid(with_reason)


def test_error_is_one_escaped_sentence() -> None:
    message = render_error("Timbal said <!channel> & left")
    assert texts(message) == [":warning: Timbal said &lt;!channel&gt; &amp; left"]
    assert message.text == "Timbal said &lt;!channel&gt; &amp; left"
    assert_valid(render_error("x" * 10_000))


def test_fit_blocks_cuts_what_construction_got_wrong() -> None:
    blocks: list[Block] = [HeaderBlock(text="h" * 400)]
    blocks += [SectionBlock(text="s" * 5000, fields=["f" * 3000] * 12) for _ in range(60)]
    blocks.append(ContextBlock(elements=[{"type": "mrkdwn", "text": "footer"}] * 12))
    fitted = fit_blocks(blocks)
    assert block_errors(fitted) == []
    assert len(fitted) == MAX_BLOCKS
    assert fitted[-1]["elements"][0]["text"] == "footer"


# --- hostile listings: always within Block Kit's limits --------------------------------

hostile_job = hostile_jobs(any_stamps)
stamps = any_stamps
hostile_queries = st.builds(
    JobsQuery,
    connector_id=st.none() | nasty_text,
    state=st.none() | st.sampled_from(["failed", "active", "running", "<!channel>"]),
    limit=st.integers(-5, 100),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_job, max_size=40), hostile_queries, stamps, nasty_text)
def test_hostile_listings_stay_within_block_kit(
    jobs: list[Job], query: JobsQuery, now: datetime, org_id: str
) -> None:
    message = render_jobs_listing(jobs, query=query, classifier=CLASSIFIER, now=now, org_id=org_id)
    assert_valid(message)
    dumped = json.dumps(message.blocks, ensure_ascii=False) + message.text
    assert "<!channel>" not in dumped and "<https://evil" not in dumped
    # The only markup that reaches Slack is ours: date tokens.
    assert re.findall(r"<(?!!date\^-?\d+\^)", dumped) == []


@given(nasty_text)
def test_hostile_errors_and_reasons_stay_within_block_kit(text: str) -> None:
    assert_valid(render_error(text))
    assert_valid(render_usage(text))
