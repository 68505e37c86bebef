"""The demo's terminal rendering of what the bot posts to Slack, by tables."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.blockkit import code, date_token, escape
from bot.sim.console import block_lines, format_slack_call, mrkdwn_lines, mrkdwn_to_text
from bot.sim.slack_api import Call

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def call(method: str = "chat.postMessage", **body: Any) -> Call:
    return Call(method=method, body=body, at=0.0)


def reply(**body: Any) -> Call:
    return call("response_url", text="x", **body)


def md(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def pt(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


RETRY = {"type": "button", "text": pt("Retry"), "style": "danger"}
LOGO = {"type": "image", "image_url": "https://t.ai/logo.png", "alt_text": "x"}
MUTE = {"type": "static_select", "placeholder": pt("Mute")}


# --- mrkdwn -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mrkdwn", "shown"),
    [
        ("plain words", "plain words"),
        ("a &lt;b&gt; &amp; c", "a <b> & c"),
        ("&amp;lt; stays an entity once", "&lt; stays an entity once"),
        ("<!date^1764417600^{date_short_pretty} {time}|2025-11-29 12:00>", "2025-11-29 12:00"),
        ("<!date^1764417600^{time}^https://x.io|noon>", "noon"),
        ("<@U123>", "@U123"),
        ("<#C42|data-alerts>", "#data-alerts"),
        ("<#C42>", "#C42"),
        ("<!channel> and <!here>", "@channel and @here"),
        ("<!subteam^S1|@oncall>", "@oncall"),
        ("<https://timbal.ai/jobs/1|open job>", "open job (https://timbal.ai/jobs/1)"),
        ("<https://timbal.ai>", "https://timbal.ai"),
        (":x: failed", "❌ failed"),
        (":white_check_mark: ok, :unknown_emoji: kept", "✅ ok, :unknown_emoji: kept"),
        ("arn:aws:s3:::bucket", "arn:aws:s3:::bucket"),
        ("*Connector* `pg`", "Connector `pg`"),
        ("2*3*4 and snake_case_name", "2*3*4 and snake_case_name"),
        ("&lt;!channel&gt; from the API", "<!channel> from the API"),
    ],
)  # fmt: skip
def test_mrkdwn_as_shown(mrkdwn: str, shown: str) -> None:
    assert mrkdwn_to_text(mrkdwn) == shown


def test_escaped_api_text_round_trips_to_what_the_api_said() -> None:
    raw = 'column "x": expected <TEXT>, got <ARRAY<TEXT>> & <!channel>'
    assert mrkdwn_to_text(escape(raw)) == raw


def test_date_token_from_the_renderer_shows_its_fallback() -> None:
    when = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
    assert mrkdwn_to_text(f"started {date_token(when)}") == "started 2026-11-29 12:30 UTC"


def test_code_fences_become_a_marked_block() -> None:
    lines = mrkdwn_lines("*Error*\n```ERROR: permission denied for table &lt;orders&gt;\nline 2```")
    assert lines == [
        "Error",
        "│ ERROR: permission denied for table <orders>",
        "│ line 2",
    ]


def test_blank_code_lines_have_no_trailing_space() -> None:
    assert mrkdwn_lines("```a\n\nb```") == ["│ a", "│", "│ b"]


def test_code_is_not_emojized_or_bolded() -> None:
    lines = mrkdwn_lines("```:x: *not bold*```")
    assert lines == ["│ :x: *not bold*"]


# --- blocks -------------------------------------------------------------------------------------
def failure_blocks() -> list[dict[str, Any]]:
    when = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    blocks = [
        HeaderBlock(text=":x: stripe-payments failed"),
        SectionBlock(
            fields=[
                MarkdownTextObject(text=f"*Connector*\n{code('stripe-payments')}"),
                MarkdownTextObject(text="*Rows emitted*\n12,345"),
                MarkdownTextObject(text=f"*Finished*\n{date_token(when)}"),
            ]
        ),
        SectionBlock(text=MarkdownTextObject(text=f"```{escape('429 <rate_limit> & more')}```")),
        ContextBlock(elements=[MarkdownTextObject(text=t) for t in ("job `j1`", "sync `s1`")]),
        DividerBlock(),
        ActionsBlock(
            elements=[
                ButtonElement(text="Acknowledge", action_id="ack", style="primary"),
                ButtonElement(text="Open in Timbal", action_id="open", url="https://app.timbal.ai/j1"),
            ]
        ),
    ]  # fmt: skip
    return [b.to_dict() for b in blocks]


def test_a_failure_alert_reads_top_to_bottom() -> None:
    text = format_slack_call(call(channel="#data-alerts", text="fallback", blocks=failure_blocks()))
    lines = text.split("\n")
    assert lines[0].startswith("── #data-alerts ─")
    assert lines[1:] == [
        "❌ stripe-payments failed",
        "Connector: `stripe-payments`",
        "Rows emitted: 12,345",
        "Finished: 2026-11-29 12:00 UTC",
        "│ 429 <rate_limit> & more",
        "job `j1` · sync `s1`",
        "─" * 40,
        "[ Acknowledge ]  [ Open in Timbal ] (https://app.timbal.ai/j1)",
    ]
    assert "fallback" not in text, "the blocks are what Slack shows"


@pytest.mark.parametrize(
    ("block", "lines"),
    [
        ({"type": "header", "text": {"type": "plain_text", "text": "3 jobs :x:"}}, ["3 jobs ❌"]),
        ({"type": "divider"}, ["─" * 40]),
        ({"type": "section", "text": md("*2 running* · 1 failed")}, ["2 running · 1 failed"]),
        ({"type": "section", "text": {"type": "plain_text", "text": "a\nb"}}, ["a", "b"]),
        ({"type": "section", "fields": [md("*Duration*\n1m 05s")]}, ["Duration: 1m 05s"]),
        ({"type": "section", "fields": [md("no label here")]}, ["no label here"]),
        ({"type": "section", "fields": [md("*Msg*\nline1\nline2")]}, ["Msg: line1", "    line2"]),
        ({"type": "section", "text": md("hi"), "accessory": RETRY}, ["hi", "[ Retry ]"]),
        ({"type": "context", "elements": [md("<!date^1^{t}|noon>"), LOGO]}, ["noon · [image: x]"]),
        ({"type": "actions", "elements": [MUTE, {"type": "overflow"}]}, ["[ Mute ▾ ]  [ … ]"]),
        ({"type": "image", "image_url": "u", "alt_text": "chart"}, ["[image: chart]"]),
        ({"type": "video"}, ["[video block]"]),
        ("not a block", ["'not a block'"]),
    ],
)  # fmt: skip
def test_blocks_by_table(block: Any, lines: list[str]) -> None:
    assert block_lines(block) == lines


def test_rich_text_block() -> None:
    block = {
        "type": "rich_text",
        "elements": [
            {
                "type": "rich_text_section",
                "elements": [
                    {"type": "text", "text": "Failed: ", "style": {"bold": True}},
                    {"type": "emoji", "name": "x"},
                    {"type": "user", "user_id": "U1"},
                    {"type": "channel", "channel_id": "C1"},
                    {"type": "link", "url": "https://t.ai", "text": "job"},
                    {"type": "date", "timestamp": 1, "format": "{time}", "fallback": "noon"},
                    {"type": "broadcast", "range": "here"},
                ],
            },
            {"type": "rich_text_preformatted", "elements": [{"type": "text", "text": "a\nb"}]},
            {"type": "rich_text_quote", "elements": [{"type": "text", "text": "quoted"}]},
            {
                "type": "rich_text_list",
                "style": "bullet",
                "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": "one"}]},
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": "two"}]},
                ],
            },
        ],
    }
    assert block_lines(block) == [
        "Failed: ❌@U1#C1jobnoon@here",
        "│ a",
        "│ b",
        "> quoted",
        "• one",
        "• two",
    ]


# --- messages -----------------------------------------------------------------------------------
def test_text_only_message_shows_its_text() -> None:
    text = format_slack_call(call(channel="C1", text="*3 failed* &lt;x&gt;"))
    assert text.split("\n")[1:] == ["3 failed <x>"]


def test_blocks_sent_as_a_json_string_are_read() -> None:
    import json

    body = {"channel": "C1", "blocks": json.dumps([{"type": "divider"}])}
    assert format_slack_call(call(**body)).split("\n")[1:] == ["─" * 40]


def test_broken_blocks_fall_back_to_text() -> None:
    out = format_slack_call(call(channel="C1", text="fallback", blocks="{not json"))
    assert out.split("\n")[1:] == ["fallback"]


def test_empty_message() -> None:
    assert format_slack_call(call(channel="C1")).split("\n")[1:] == ["(empty message)"]


def test_thread_reply_is_indented_under_its_parent() -> None:
    reply = call(channel="C1", thread_ts="1700000000.000001", text="```part 2 of the trace```")
    lines = format_slack_call(reply).split("\n")
    assert lines == [
        "    ↳ reply in thread 1700000000.000001 of C1",
        "    │ part 2 of the trace",
    ]


@pytest.mark.parametrize(
    ("made", "title"),
    [
        (call("response_url", text="x"), "/jobs reply, only you can see it"),
        (reply(response_type="ephemeral"), "/jobs reply, only you can see it"),
        (reply(response_type="in_channel"), "/jobs reply, posted in the channel"),
        (reply(replace_original=True), "/jobs reply, only you can see it, replacing the original"),
        (call("chat.postEphemeral", channel="C1", user="U7", text="x"), "C1 (only visible to @U7)"),
        (call("chat.update", channel="C1", ts="17.1", text="x"), "C1 (message 17.1 updated)"),
        (call("auth.test"), "auth.test"),
    ],
)  # fmt: skip
def test_where_it_went(made: Call, title: str) -> None:
    first = format_slack_call(made).split("\n")[0]
    assert first.startswith(f"── {title} ─")


def test_colour_only_when_asked() -> None:
    message = call(channel="#a", blocks=failure_blocks())
    plain = format_slack_call(message)
    coloured = format_slack_call(message, color=True)
    assert "\x1b[" not in plain
    assert "\x1b[1m❌ stripe-payments failed\x1b[0m" in coloured
    assert ANSI.sub("", coloured) == plain


def test_coloured_bold_in_mrkdwn() -> None:
    assert mrkdwn_to_text("*2 failed* of 3", color=True) == "\x1b[1m2 failed\x1b[0m of 3"
