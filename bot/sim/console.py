"""What the bot posts to Slack, as readable terminal text (the demo's Slack stand-in prints it).

`format_slack_call(call)` turns a `chat.postMessage` / `chat.update` / `chat.postEphemeral` body
or a response-URL body into lines: where it went, then each block (header, section text,
fields as `label: value`, code blocks, context, buttons). Slack's markup is resolved the way
Slack shows it: date tokens `<!date^…|fallback>` become their fallback, links their label,
mentions `@id`, and the escaped entities `&lt; &gt; &amp;` their characters. Thread replies
are indented under a `↳` line. ANSI colours only when asked (`color=True`, for a TTY).

Hand-written because no library renders Block Kit to a terminal; slack_sdk only builds blocks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from bot.sim.slack_api import Call

RESET, BOLD, DIM, RED, GREEN, YELLOW, CYAN = (
    "\x1b[0m", "\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[36m",
)  # fmt: skip
RULE = "─"
INDENT = "    "

EMOJI = {
    "x": "❌",
    "white_check_mark": "✅",
    "heavy_check_mark": "✔️",
    "no_entry_sign": "🚫",
    "no_entry": "⛔",
    "arrows_counterclockwise": "🔄",
    "hourglass_flowing_sand": "⏳",
    "grey_question": "❔",
    "warning": "⚠️",
    "rotating_light": "🚨",
    "red_circle": "🔴",
    "large_green_circle": "🟢",
    "information_source": "ℹ️",
    "stopwatch": "⏱️",
    "bar_chart": "📊",
    "thread": "🧵",
    "link": "🔗",
    "eyes": "👀",
    "repeat": "🔁",
    "checkered_flag": "🏁",
    "bell": "🔔",
    "mute": "🔇",
    "lock": "🔒",
}

# Slack's `<…>` tokens: dates, special mentions, users, channels, links (label after `|`).
_TOKEN = re.compile(r"<([^<>\n]+)>")
_EMOJI = re.compile(r":([a-z0-9_+-]+):")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_FENCE = re.compile(r"```\n?(.*?)\n?```", re.DOTALL)
_LABEL_VALUE = re.compile(r"^\*([^*\n]+)\*:?\s*\n(.*)$", re.DOTALL)


def _paint(text: str, style: str, color: bool) -> str:
    return f"{style}{text}{RESET}" if color and text else text


def _token(inner: str) -> str:
    body, _, label = inner.partition("|")
    if body.startswith("!date^"):
        return label or body
    if body.startswith("!subteam^"):
        return label or "@" + body.removeprefix("!subteam^")
    if body.startswith("!"):
        return "@" + body[1:]
    if body.startswith("@"):
        return "@" + (label or body[1:])
    if body.startswith("#"):
        return "#" + (label or body[1:])
    if label:
        return f"{label} ({body})"
    return body


def unescape(text: str) -> str:
    """Slack's three escaped entities back to characters (`&amp;` last, so `&amp;lt;` → `&lt;`)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def emojize(text: str) -> str:
    return _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)


def mrkdwn_to_text(text: str, *, color: bool = False) -> str:
    """One piece of mrkdwn (no code fences) as Slack shows it: tokens, emoji, bold, entities."""
    text = _TOKEN.sub(lambda m: _token(m.group(1)), text)
    text = _BOLD.sub(lambda m: _paint(m.group(1), BOLD, color), emojize(text))
    return unescape(text)


def _code_lines(code: str, color: bool) -> list[str]:
    return [
        _paint("│ " if ln else "│", DIM, color) + _paint(unescape(ln), YELLOW, color)
        for ln in code.split("\n")
    ]


def mrkdwn_lines(text: str, *, color: bool = False) -> list[str]:
    """A section's mrkdwn as lines, code fences as a gutter-marked block."""
    lines: list[str] = []
    position = 0
    for fence in _FENCE.finditer(text):
        before = text[position : fence.start()].strip("\n")
        if before:
            lines += mrkdwn_to_text(before, color=color).split("\n")
        lines += _code_lines(fence.group(1), color)
        position = fence.end()
    rest = text[position:].strip("\n")
    if rest:
        lines += mrkdwn_to_text(rest, color=color).split("\n")
    return lines


def _text_of(obj: Any, color: bool) -> str:
    """A text object (plain_text or mrkdwn) as one string."""
    if not isinstance(obj, Mapping):
        return str(obj) if obj is not None else ""
    text = str(obj.get("text", ""))
    if obj.get("type") == "plain_text":
        return emojize(text)
    return mrkdwn_to_text(text, color=color)


def _field_line(field: Any, color: bool) -> list[str]:
    """A section field; the usual `*Label*\nvalue` shape becomes `Label: value`."""
    if isinstance(field, Mapping) and field.get("type") == "plain_text":
        return emojize(str(field.get("text", ""))).split("\n")
    raw = str(field.get("text", "")) if isinstance(field, Mapping) else str(field)
    match = _LABEL_VALUE.match(raw)
    if match is None:
        return mrkdwn_lines(raw, color=color)
    label = mrkdwn_to_text(match.group(1))
    value = mrkdwn_lines(match.group(2), color=color) or [""]
    return [f"{_paint(label, BOLD, color)}: {value[0]}", *(INDENT + v for v in value[1:])]


def _element(el: Any, color: bool) -> str:
    """An interactive element (button, select, overflow, ...) as one bracketed chip."""
    if not isinstance(el, Mapping):
        return ""
    kind = el.get("type")
    if kind == "button":
        label = _text_of(el.get("text"), False)
        style = {"primary": GREEN, "danger": RED}.get(str(el.get("style")), CYAN)
        chip = _paint(f"[ {label} ]", style, color)
        return f"{chip} ({el['url']})" if el.get("url") else chip
    if kind in ("static_select", "external_select", "users_select", "channels_select"):
        return _paint(f"[ {_text_of(el.get('placeholder'), False) or 'choose'} ▾ ]", CYAN, color)
    if kind == "overflow":
        return _paint("[ … ]", CYAN, color)
    if kind == "image":
        return f"[image: {el.get('alt_text', '')}]"
    if kind in ("mrkdwn", "plain_text"):
        return _text_of(el, color)
    return f"[{kind}]"


def _rich_text(block: Mapping[str, Any], color: bool) -> list[str]:
    lines: list[str] = []

    def inline(elements: Any) -> str:
        parts = []
        for el in elements if isinstance(elements, list) else []:
            kind = el.get("type") if isinstance(el, Mapping) else None
            if kind == "text":
                bold = isinstance(el.get("style"), Mapping) and el["style"].get("bold")
                parts.append(_paint(str(el.get("text", "")), BOLD, color and bool(bold)))
            elif kind == "link":
                parts.append(str(el.get("text") or el.get("url", "")))
            elif kind == "emoji":
                parts.append(EMOJI.get(str(el.get("name")), f":{el.get('name')}:"))
            elif kind in ("user", "usergroup"):
                parts.append("@" + str(el.get("user_id") or el.get("usergroup_id")))
            elif kind == "channel":
                parts.append("#" + str(el.get("channel_id")))
            elif kind == "broadcast":
                parts.append("@" + str(el.get("range")))
            elif kind == "date":
                parts.append(str(el.get("fallback") or el.get("timestamp")))
        return "".join(parts)

    for part in block.get("elements") or []:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "rich_text_preformatted":
            lines += _code_lines(inline(part.get("elements")), color)
        elif kind == "rich_text_quote":
            lines += ["> " + ln for ln in inline(part.get("elements")).split("\n")]
        elif kind == "rich_text_list":
            for item in part.get("elements") or []:
                lines.append(
                    "• " + inline(item.get("elements") if isinstance(item, Mapping) else [])
                )
        elif kind == "rich_text_section":
            lines += inline(part.get("elements")).split("\n")
    return lines


def block_lines(block: Any, *, color: bool = False) -> list[str]:
    """One Block Kit block as terminal lines."""
    if not isinstance(block, Mapping):
        return [repr(block)]
    kind = block.get("type")
    if kind == "header":
        return [_paint(_text_of(block.get("text"), False), BOLD, color)]
    if kind == "divider":
        return [_paint(RULE * 40, DIM, color)]
    if kind == "context":
        chips = [_element(el, color=False) for el in block.get("elements") or []]
        return [_paint(" · ".join(c for c in chips if c), DIM, color)]
    if kind == "actions":
        return ["  ".join(_element(el, color) for el in block.get("elements") or [])]
    if kind == "image":
        return [f"[image: {block.get('alt_text', '')}]"]
    if kind == "rich_text":
        return _rich_text(block, color)
    if kind == "section":
        lines: list[str] = []
        text = block.get("text")
        if isinstance(text, Mapping):
            if text.get("type") == "plain_text":
                lines += emojize(str(text.get("text", ""))).split("\n")
            else:
                lines += mrkdwn_lines(str(text.get("text", "")), color=color)
        for field in block.get("fields") or []:
            lines += _field_line(field, color)
        accessory = block.get("accessory")
        if accessory is not None:
            lines.append(_element(accessory, color))
        return lines
    return [f"[{kind} block]"]


def _blocks(body: Mapping[str, Any]) -> list[Any] | None:
    blocks = body.get("blocks")
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError:
            return None
    return blocks if isinstance(blocks, list) and blocks else None


def _title(call: Call) -> str:
    body = call.body
    channel = body.get("channel")
    if call.method == "response_url":
        public = body.get("response_type") == "in_channel"
        where = "posted in the channel" if public else "only you can see it"
        replaces = body.get("replace_original") in (True, "true")
        return f"/jobs reply, {where}" + (", replacing the original" if replaces else "")
    if call.method == "chat.postEphemeral":
        return f"{channel} (only visible to @{body.get('user')})"
    if call.method == "chat.update":
        return f"{channel} (message {body.get('ts')} updated)"
    if call.method == "chat.postMessage":
        return str(channel)
    return f"{call.method} {channel or ''}".strip()


def _iter_body(body: Mapping[str, Any], color: bool) -> Iterable[str]:
    blocks = _blocks(body)
    if blocks is None:
        text = str(body.get("text") or "")
        yield from mrkdwn_lines(text, color=color) if text else ["(empty message)"]
        return
    for block in blocks:
        yield from block_lines(block, color=color)


def format_slack_call(call: Call, *, color: bool = False) -> str:
    """A message the bot sent, as readable text (several lines, no trailing newline)."""
    title = _title(call)
    head = _paint(f"{RULE * 2} {title} ", CYAN, color) + _paint(
        RULE * max(4, 60 - len(title)), DIM, color
    )
    lines = list(_iter_body(call.body, color))
    thread = call.body.get("thread_ts")
    if call.method == "chat.postMessage" and thread:
        head = _paint(
            f"{INDENT}↳ reply in thread {thread} of {call.body.get('channel')}", CYAN, color
        )
        lines = [INDENT + ln for ln in lines]
    return "\n".join([head, *lines])
