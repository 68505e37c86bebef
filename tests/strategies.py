"""Hypothesis strategies for hostile API data, shared by the rendering property tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

from bot.domain.models import Job

NASTY = [
    "<!channel>",
    "<https://evil|click>",
    "&",
    "`",
    "```",
    "\x00",
    "\x1b[31m",
    "\u202e",
    "é",
    "😀",
    "\n",
]
nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(NASTY),
    st.builds(lambda s, n: s * n, st.sampled_from([*NASTY, "x"]), st.integers(1, 20_000)),
)
offsets = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
any_stamps = st.datetimes(timezones=offsets)
epoch_stamps = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
)
known_states = st.sampled_from(["failed", "running", "succeeded", "queued", "cancelled"])


def hostile_jobs(stamps: st.SearchStrategy[datetime] = any_stamps) -> st.SearchStrategy[Job]:
    """Jobs whose every string is hostile, huge or empty, with extreme numbers and times."""
    return st.builds(
        Job,
        id=nasty_text,
        connector_id=nasty_text,
        kb_uid=nasty_text,
        dest_table=nasty_text,
        mode=nasty_text,
        state=known_states | nasty_text,
        rows_emitted=st.integers() | st.just(10**300),
        created_at=stamps,
        updated_at=stamps,
        duration_ms=st.none() | st.integers(),
        finished_at=st.none() | stamps,
        message=st.none() | nasty_text,
        rows_per_sec=st.none() | st.floats(),
        started_at=st.none() | stamps,
        sync_id=st.none() | nasty_text,
    )
