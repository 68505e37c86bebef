"""Alert messages: tables for content, properties for Block Kit limits and escaping."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block

from bot.alerts.render import (
    CHUNK_CHARS,
    MAX_MESSAGE_TEXT,
    MAX_THREAD_CHUNKS,
    AlertMessage,
    render_alert,
    render_cancelled_alert,
    render_digest,
    render_failure_alert,
    render_finished_alert,
    render_plain,
    render_started_alert,
    render_success_alert,
    split_chunks,
    with_mention,
)
from bot.blockkit import (
    MAX_BLOCKS,
    MAX_FALLBACK_TEXT,
    MAX_FIELD_TEXT,
    MAX_FIELDS,
    MAX_HEADER_TEXT,
    MAX_SECTION_TEXT,
    escape,
)
from bot.domain.events import EventKind, JobEvent
from bot.domain.models import Job
from bot.sim.slack_api import block_errors
from tests.fakes import make_job
from tests.strategies import any_stamps, hostile_jobs

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
STARTED = NOW - timedelta(minutes=5)
FINISHED = NOW - timedelta(minutes=1)


def job(**fields: Any) -> Job:
    base: dict[str, Any] = {
        "id": "job_1",
        "connector_id": "postgres-main",
        "dest_table": "public.orders",
        "state": "failed",
        "rows_emitted": 1200,
        "rows_per_sec": 25.5,
        "duration_ms": 61_000,
        "created_at": (STARTED - timedelta(seconds=5)).isoformat(),
        "updated_at": FINISHED.isoformat(),
        "started_at": STARTED.isoformat(),
        "finished_at": FINISHED.isoformat(),
        "message": "permission denied for table orders",
        "sync_id": "sync_9",
    }
    base.update(fields)
    return Job.model_validate(make_job(str(base.pop("id")), **base))


def event(kind: EventKind = EventKind.FAILED, **fields: Any) -> JobEvent:
    return JobEvent(org_id="org_1", kind=kind, job=job(**fields), detected_at=NOW)


def texts(message: AlertMessage) -> list[str]:
    found: list[str] = []
    for block in message.blocks:
        if isinstance(block.get("text"), dict):
            found.append(block["text"]["text"])
        found += [f["text"] for f in block.get("fields", [])]
        found += [e["text"] for e in block.get("elements", []) if "text" in e]
    return found


def everything(message: AlertMessage) -> str:
    return (
        json.dumps(message.blocks, ensure_ascii=False)
        + message.text
        + "".join(message.thread_chunks)
    )


def assert_valid(message: AlertMessage, *sources: str) -> None:
    assert block_errors(message.blocks) == []
    for data in message.blocks:
        model = Block.parse(data)
        assert model is not None
        model.validate_json()  # slack_sdk's own limits; raises when broken
        if data["type"] == "header":
            assert len(data["text"]["text"]) <= MAX_HEADER_TEXT
        if data["type"] == "section":
            assert len(data.get("text", {}).get("text", "")) <= MAX_SECTION_TEXT
            assert len(data.get("fields", [])) <= MAX_FIELDS
            assert all(len(f["text"]) <= MAX_FIELD_TEXT for f in data.get("fields", []))
    assert 0 < len(message.text) <= MAX_FALLBACK_TEXT
    assert len(message.thread_chunks) <= MAX_THREAD_CHUNKS
    for chunk in message.thread_chunks:
        assert len(chunk) <= MAX_SECTION_TEXT
        assert chunk.startswith("```") and chunk.endswith("```")
        assert "`" not in chunk[3:-3]  # nothing breaks out of the code block
    assert len(render_plain(message)) <= MAX_MESSAGE_TEXT
    assert_escaped(message, *sources)


def assert_escaped(message: AlertMessage, *sources: str) -> None:
    dumped = everything(message) + render_plain(message)
    if not any(";" in s for s in sources):  # then nothing may be escaped twice
        assert re.findall(r"&amp;(amp|lt|gt);", dumped) == []
    # The only `<…>` markup that reaches Slack is ours: date tokens.
    assert re.findall(r"<(?!!date\^-?\d+\^)", dumped) == []
    # Every `&` starts an entity we wrote.
    assert re.findall(r"&(?!amp;|lt;|gt;)", dumped) == []


# --- one event: content ------------------------------------------------------------------


def test_failure_alert_has_header_fields_error_and_ids() -> None:
    message = render_failure_alert(event(), now=NOW)
    assert_valid(message)
    kinds = [b["type"] for b in message.blocks]
    assert kinds == ["header", "section", "section", "context"]
    assert message.blocks[0]["text"]["text"] == ":x: postgres-main failed"
    fields = [f["text"] for f in message.blocks[1]["fields"]]
    assert fields[:7] == [
        "*Connector*\n`postgres-main`",
        "*Destination table*\n`public.orders`",
        "*State*\nfailed",
        "*Mode*\nincremental",
        "*Rows emitted*\n1,200",
        "*Rows/s*\n25.5/s",
        "*Duration*\n1m 01s",
    ]
    assert fields[7].startswith(f"*Started*\n<!date^{int(STARTED.timestamp())}^")
    assert fields[8].startswith(f"*Finished*\n<!date^{int(FINISHED.timestamp())}^")
    assert texts(message)[-2] == "*Error*\n```permission denied for table orders```"
    context = texts(message)[-1]
    assert "job `job_1`" in context and "sync `sync_9`" in context
    assert message.text == (
        ":x: postgres-main → public.orders failed: permission denied for table orders"
    )
    assert message.thread_chunks == []


def test_failure_fallback_text_is_the_first_line_escaped() -> None:
    message = render_alert(event(message="\n\n  <!channel> & `boom`  \nsecond line"), now=NOW)
    assert message.text == (
        ":x: postgres-main → public.orders failed: &lt;!channel&gt; &amp; 'boom'"
    )


def test_failure_without_message_says_so() -> None:
    message = render_alert(event(message=None), now=NOW)
    assert_valid(message)
    assert "_The job reported no error message._" in texts(message)
    assert message.text.endswith("failed: no error message")


def test_failure_without_duration_uses_the_timestamps_and_manual_run() -> None:
    message = render_alert(event(duration_ms=None, sync_id=None), now=NOW)
    assert "*Duration*\n4m 00s" in texts(message)
    assert "manual run" in texts(message)[-1]


def test_long_error_keeps_head_and_tail_and_goes_to_the_thread() -> None:
    head = "ERROR: could not COPY public.orders"
    tail = "CAUSE: disk quota exceeded on replica 3"
    body = "\n".join(f"  at frame {i} <x> & `y`" for i in range(2000))
    message = render_alert(event(message=f"{head}\n{body}\n{tail}"), now=NOW)
    assert_valid(message)
    error = next(t for t in texts(message) if t.startswith("*Error*"))
    assert head in error and tail in error and "\n… 1,997 more lines …\n" in error
    assert len(error) <= MAX_SECTION_TEXT
    assert any("in the thread" in t for t in texts(message))
    assert 2 <= len(message.thread_chunks) <= MAX_THREAD_CHUNKS
    joined = "".join(c[3:-3] for c in message.thread_chunks)
    assert head in joined and tail in joined
    assert "&lt;x&gt; &amp; 'y'" in joined


def test_a_long_error_shows_its_first_and_last_lines_and_is_whole_once_in_the_thread() -> None:
    lines = [f"line {i:02d}" for i in range(40)]  # what the demo's long failures look like
    message = render_alert(event(message="\n".join(lines)), now=NOW)
    assert_valid(message)
    error = next(t for t in texts(message) if t.startswith("*Error*"))
    assert error == (
        "*Error*\n```line 00\nline 01\nline 02\n… 35 more lines …\nline 38\nline 39```"
    )
    whole = "\n".join(c[3:-3] for c in message.thread_chunks)
    assert whole.split("\n") == lines  # the whole text, once
    everything = json.dumps(message.blocks) + "".join(message.thread_chunks)
    assert everything.count("line 20") == 1


def test_a_short_error_is_whole_in_the_alert_and_not_threaded() -> None:
    message = render_alert(event(message="one\ntwo\nthree"), now=NOW)
    assert "*Error*\n```one\ntwo\nthree```" in texts(message)
    assert message.thread_chunks == []


def test_moderately_long_error_is_threaded_whole() -> None:
    lines = [f"line {i:04d}" for i in range(600)]  # ~6,000 characters: fits the thread
    message = render_alert(event(message="\n".join(lines)), now=NOW)
    joined = "\n".join(c[3:-3] for c in message.thread_chunks)
    assert joined.split("\n") == lines


def test_huge_error_threads_at_most_the_cap_with_head_and_tail() -> None:
    message = render_alert(event(message="HEAD " + "x" * 1_000_000 + " TAIL"), now=NOW)
    assert_valid(message)
    assert len(message.thread_chunks) <= MAX_THREAD_CHUNKS
    assert sum(len(c) for c in message.thread_chunks) > 20_000  # most of what the cap allows
    assert message.thread_chunks[0].startswith("```HEAD ")
    assert message.thread_chunks[-1].endswith(" TAIL```")


@pytest.mark.parametrize(
    ("text", "size"),
    [("a" * 10, 3), ("ab\ncd\nef", 4), ("x&amp;y" * 3, 5), ("", 5), ("&lt;" * 100, 7)],
)
def test_split_chunks_never_splits_entities_and_loses_nothing(text: str, size: int) -> None:
    chunks = split_chunks(text, size)
    assert all(0 < len(c) <= size for c in chunks)
    assert "".join(chunks).replace("\n", "") == text.replace("\n", "")
    for c in chunks:
        assert re.findall(r"&(?!amp;|lt;|gt;)", c) == []


def test_chunk_size_leaves_room_for_the_fence() -> None:
    assert CHUNK_CHARS + 6 == MAX_SECTION_TEXT


def test_header_is_truncated_but_says_failed() -> None:
    message = render_alert(event(connector_id="c" * 400), now=NOW)
    header = message.blocks[0]["text"]["text"]
    assert len(header) <= MAX_HEADER_TEXT and header.endswith("… failed")


@pytest.mark.parametrize(
    ("kind", "state", "render", "label", "when"),
    [
        (EventKind.SUCCEEDED, "succeeded", render_success_alert, "*succeeded*", "finished"),
        (EventKind.CANCELLED, "cancelled", render_cancelled_alert, "*cancelled*", "cancelled"),
        (
            EventKind.FINISHED,
            "exploded",
            render_finished_alert,
            "*finished (state: exploded)*",
            "finished",
        ),
    ],
)
def test_terminal_alerts_are_compact(
    kind: EventKind, state: str, render: Any, label: str, when: str
) -> None:
    e = event(kind, state=state, message="stopped by <@U123>")
    message = render(e, now=NOW)
    assert message == render_alert(e, now=NOW)
    assert_valid(message)
    assert [b["type"] for b in message.blocks] == ["section", "context"]
    line = texts(message)[0]
    assert label in line and "`postgres-main` → `public.orders`" in line
    assert "1,200 rows" in line and "1m 01s" in line
    assert f" · {when} <!date^" in texts(message)[1]
    assert message.text.startswith(f"{line.split(' ')[0]} postgres-main → public.orders ")
    if kind is EventKind.SUCCEEDED:
        assert "stopped by" not in everything(message)
    else:
        assert "`stopped by &lt;@U123&gt;`" in line


def test_started_alert_says_how_long_it_has_run() -> None:
    e = event(EventKind.STARTED, state="running", finished_at=None, duration_ms=None, message=None)
    message = render_started_alert(e, now=NOW)
    assert_valid(message)
    assert "*started*" in texts(message)[0] and "running for 5m 00s" in texts(message)[0]
    assert message.text == ":arrows_counterclockwise: postgres-main → public.orders started"


def test_plain_text_keeps_every_part() -> None:
    message = render_alert(event(message="boom <!here>"), now=NOW)
    plain = render_plain(message)
    assert plain.startswith(":x: postgres-main failed\n*Connector*: `postgres-main`\n")
    assert "```boom &lt;!here&gt;```" in plain and "job `job_1`" in plain
    assert render_plain(AlertMessage(text="only text", blocks=[])) == "only text"


# --- digests -------------------------------------------------------------------------------


def storm(n: int, **fields: Any) -> list[JobEvent]:
    kinds = [EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELLED]
    return [
        event(kinds[i % 3], **{"id": f"job_{i}", "connector_id": f"conn-{i % 7}", **fields})
        for i in range(n)
    ]


def test_digest_counts_and_lists_failures_first() -> None:
    events = storm(9)
    message = render_digest(events, now=NOW, max_listed=4)
    assert_valid(message)
    assert message.blocks[0]["text"]["text"] == (
        ":rotating_light: 9 job alerts: 3 failed, 3 cancelled, 3 succeeded"
    )
    assert message.text == message.blocks[0]["text"]["text"]
    assert texts(message)[1] == (
        ":x: *3 failed* · :no_entry_sign: *3 cancelled* · :white_check_mark: *3 succeeded* "
        "across 7 connectors"
    )
    lines = texts(message)[2].split("\n")
    assert [line.split(" ")[0] for line in lines] == [":x:", ":x:", ":x:", ":no_entry_sign:"]
    assert lines[0] == (":x: `conn-1` → `public.orders` · `permission denied for table orders`")
    assert texts(message)[-1].startswith("…and 5 more · detected <!date^")


def test_digest_lines_escape_once() -> None:
    events = storm(3, message="<b> & `c`", dest_table="a&b")
    message = render_digest(events, now=NOW)
    assert_valid(message)
    assert ":x: `conn-1` → `a&amp;b` · `&lt;b&gt; &amp; 'c'`" in texts(message)[2].split("\n")


def test_digest_of_300_stays_within_limits() -> None:
    message = render_digest(storm(300), now=NOW)
    assert_valid(message)
    listed = sum(t.count("\n") + 1 for t in texts(message)[2:-1])
    assert listed == 20
    assert "…and 280 more" in texts(message)[-1]


def test_digest_of_hostile_huge_fields_stays_within_limits() -> None:
    nasty = "<!channel> & `x` <https://evil|y> " * 3000
    events = storm(300, connector_id=nasty, dest_table=nasty, message=nasty, id=nasty)
    for listed in (0, 20, 1000):
        message = render_digest(events, now=NOW, max_listed=listed)
        assert_valid(message)
        assert "<!channel>" not in everything(message)


def test_empty_digest_is_still_a_valid_message() -> None:
    message = render_digest([], now=NOW)
    assert_valid(message)
    assert message.text == ":rotating_light: 0 job alerts: nothing"


# --- hostile events: always within Block Kit's limits ---------------------------------------

hostile_job = hostile_jobs(any_stamps)
stamps = any_stamps
hostile_events = st.builds(
    JobEvent,
    org_id=st.just("org_1"),
    kind=st.sampled_from(EventKind),
    job=hostile_job,
    detected_at=stamps,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_events, stamps)
def test_hostile_events_render_within_limits_and_escaped(e: JobEvent, now: datetime) -> None:
    message = render_alert(e, now=now)
    assert_valid(message)
    j = e.job
    fields = [j.id, j.connector_id, j.dest_table, j.mode, j.state, j.message, j.sync_id]
    assert_escaped(message, *(f or "" for f in fields))
    if e.kind is EventKind.FAILED and e.job.message and len(escape(e.job.message).strip()) > 5000:
        assert message.thread_chunks  # cut in the main post: the thread has it


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_events, max_size=60), stamps, st.integers(-3, 200))
def test_hostile_digests_render_within_limits(
    events: list[JobEvent], now: datetime, max_listed: int
) -> None:
    sources = [
        f or ""
        for e in events
        for f in (e.job.id, e.job.connector_id, e.job.dest_table, e.job.state, e.job.message)
    ]
    assert_valid(render_digest(events, now=now, max_listed=max_listed), *sources)


def test_with_mention_pings_in_text_and_under_the_header() -> None:
    message = with_mention(render_alert(event(), now=NOW), "<!subteam^S0ONCALL1>")
    assert message.text.startswith("<!subteam^S0ONCALL1> ")
    assert message.blocks[0]["type"] == "header"
    assert message.blocks[1]["text"]["text"].startswith("<!subteam^S0ONCALL1> on call")
    assert block_errors(message.blocks) == []


def test_with_mention_keeps_a_full_message_within_the_block_limit() -> None:
    full = AlertMessage(text="x", blocks=[{"type": "divider"}] * MAX_BLOCKS)
    message = with_mention(full, "<@U0ONCALL1>")
    assert len(message.blocks) == MAX_BLOCKS
    assert message.text == "<@U0ONCALL1> x"
