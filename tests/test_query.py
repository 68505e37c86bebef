"""Parsing `/jobs` text: tables for every rule and bad input, properties for the rest."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.models import Job
from bot.domain.states import StateClassifier
from bot.jobs.query import (
    DEFAULT_LIMIT,
    MAX_CONNECTOR_LENGTH,
    MAX_LIMIT,
    USAGE,
    HelpRequest,
    JobsQuery,
    QueryError,
    parse_jobs_command,
)
from tests.fakes import make_job


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", JobsQuery()),
        ("   \t ", JobsQuery()),
        ("postgres-main", JobsQuery(connector_id="postgres-main")),
        ("  postgres-main  ", JobsQuery(connector_id="postgres-main")),
        ("s3://bucket/path@v2:x_y.z", JobsQuery(connector_id="s3://bucket/path@v2:x_y.z")),
        ("Postgres-Main", JobsQuery(connector_id="Postgres-Main")),  # ids keep their case
        ("state=failed", JobsQuery(state="failed")),
        ("STATE=Running", JobsQuery(state="running")),
        ("limit=5", JobsQuery(limit=5)),
        ("limit=1", JobsQuery(limit=1)),
        (f"limit={MAX_LIMIT}", JobsQuery(limit=MAX_LIMIT)),
        ("limit=007", JobsQuery(limit=7)),
        ("pg state=failed limit=3", JobsQuery(connector_id="pg", state="failed", limit=3)),
        ("limit=3 pg state=failed", JobsQuery(connector_id="pg", state="failed", limit=3)),
        ("state=timed_out limit=3 pg", JobsQuery(connector_id="pg", state="timed_out", limit=3)),
        ("connector=help", JobsQuery(connector_id="help")),
        ("connector=pg", JobsQuery(connector_id="pg")),
        ("x" * MAX_CONNECTOR_LENGTH, JobsQuery(connector_id="x" * MAX_CONNECTOR_LENGTH)),
        ("help", HelpRequest()),
        ("HELP", HelpRequest()),
        ("--help", HelpRequest()),
        ("-h", HelpRequest()),
        ("?", HelpRequest()),
        ("pg help", HelpRequest()),
        ("foo=bar help", HelpRequest()),
    ],
)
def test_valid_text(text: str, expected: JobsQuery | HelpRequest) -> None:
    assert parse_jobs_command(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a b", "at most one connector id"),
        ("a connector=b", "at most one connector id"),
        ("foo=bar", "Unknown option `foo=`"),
        ("=x", "Unknown option `=`"),
        ("state=a state=b", "`state=` is given more than once"),
        ("limit=1 LIMIT=2", "`limit=` is given more than once"),
        ("connector=a connector=b", "`connector=` is given more than once"),
        ("state=", "`state=` needs a value"),
        ("limit=", "`limit=` needs a value"),
        ("limit=0", "from 1 to 25 (got `0`)"),
        ("limit=26", "from 1 to 25 (got `26`)"),
        ("limit=-1", "from 1 to 25"),
        ("limit=abc", "from 1 to 25"),
        ("limit=1.5", "from 1 to 25"),
        ("limit=+5", "from 1 to 25"),
        ("limit=٥", "from 1 to 25"),  # an Arabic-Indic digit: int() takes it, we do not
        ("limit=99999999999999999999", "from 1 to 25"),
        ("state=a<b", "A state uses only"),
        ("state=" + "x" * 65, "A state is at most 64 characters"),
        ("<@U123>", "`<@U123>` is a user mention"),
        ("<@U123|bob>", "is a user mention"),
        ("<#C1|general>", "is a channel link"),
        ("<!channel>", "is a special mention"),
        ("<!subteam^S1|@team>", "is a special mention"),
        ("<https://evil.example|click>", "is a link"),
        ("<https://x.example?a=b|x>", "is a link"),
        ("&lt;script&gt;", "cannot contain `<`, `>` or `&` (got `<script>`)"),
        ("a&amp;b", "cannot contain `<`, `>` or `&` (got `a&b`)"),
        ("&lt;x=y", "cannot contain `<`, `>` or `&`"),
        ("pg`rm`", "`'` is not allowed"),
        ("pg\x00x", "control characters"),
        ("pg\x07", "control characters"),
        ("pgé", "is not allowed in"),
        ("pg;drop", "`;` is not allowed in `pg;drop`"),
        ("x" * (MAX_CONNECTOR_LENGTH + 1), f"at most {MAX_CONNECTOR_LENGTH} characters (got 201)"),
    ],
)
def test_bad_text_gives_a_reason(text: str, reason: str) -> None:
    result = parse_jobs_command(text)
    assert isinstance(result, QueryError)
    assert reason in result.message
    assert "\n" not in result.message


def test_quoted_user_text_is_short_and_cannot_close_the_code_span() -> None:
    result = parse_jobs_command("y" * 150 + "`;")
    assert isinstance(result, QueryError)
    assert len(result.message) < 200
    assert result.message.count("`") % 2 == 0


def test_usage_explains_the_grammar() -> None:
    for needle in ("/jobs", "state=", "limit=", "help", "connector=", "1–25", "default 10"):
        assert needle in USAGE


def _job(state: str, finished: bool = False) -> Job:
    fields = {"state": state, "finished_at": "2025-01-01T00:00:00Z" if finished else None}
    return Job.model_validate(make_job("j", **fields))


@pytest.mark.parametrize(
    ("filter_state", "job", "wanted"),
    [
        (None, _job("anything"), True),
        ("running", _job("running"), True),
        ("running", _job("Running "), True),
        ("running", _job("queued"), False),
        ("failed", _job("failed", finished=True), True),
        ("failed", _job("timed_out", finished=True), True),  # the class matches
        ("failed", _job("succeeded", finished=True), False),
        ("timed_out", _job("failed", finished=True), False),  # a state is exact
        ("active", _job("running"), True),
        ("active", _job("queued"), True),
        ("active", _job("succeeded", finished=True), False),
        ("other", _job("weird", finished=True), True),
        ("succeeded", _job("completed", finished=True), True),
        ("cancelled", _job("canceled", finished=True), True),
    ],
)
def test_state_filter(filter_state: str | None, job: Job, wanted: bool) -> None:
    assert JobsQuery(state=filter_state).wants(job, StateClassifier()) is wanted


# --- properties ----------------------------------------------------------------------

CONNECTOR_ALPHABET = st.sampled_from(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/@"
)
connectors = st.text(CONNECTOR_ALPHABET, min_size=1, max_size=MAX_CONNECTOR_LENGTH)
states = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_.:"), min_size=1, max_size=64
)
queries = st.builds(
    JobsQuery,
    connector_id=st.none() | connectors,
    state=st.none() | states,
    limit=st.integers(1, MAX_LIMIT),
)


@given(st.text(max_size=300))
def test_parse_never_raises(text: str) -> None:
    result = parse_jobs_command(text)
    assert isinstance(result, JobsQuery | HelpRequest | QueryError)
    if isinstance(result, QueryError):
        assert result.message and "\n" not in result.message


@given(st.lists(st.sampled_from(["pg", "state=x", "limit=3", "foo=1", "<@U1>", "&amp;", " "])))
def test_parse_never_raises_on_mixed_tokens(tokens: list[str]) -> None:
    assert isinstance(parse_jobs_command(" ".join(tokens)), JobsQuery | HelpRequest | QueryError)


@given(queries)
def test_a_valid_query_round_trips(query: JobsQuery) -> None:
    assert parse_jobs_command(query.to_text()) == query


@given(queries, st.randoms())
def test_option_order_does_not_matter(query: JobsQuery, rnd: random.Random) -> None:
    parts = query.to_text().split()
    rnd.shuffle(parts)
    assert parse_jobs_command(" ".join(parts)) == query


@given(st.text(max_size=200))
def test_whatever_parses_round_trips(text: str) -> None:
    result = parse_jobs_command(text)
    if isinstance(result, JobsQuery):
        assert parse_jobs_command(result.to_text()) == result
        assert 1 <= result.limit <= MAX_LIMIT
        assert result.limit == DEFAULT_LIMIT or "limit=" in text.lower()
