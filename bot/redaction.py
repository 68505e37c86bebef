"""Redact, then cut: the one order in which a bounded excerpt can never leak part of a secret.

A secret that straddles a cut would leave its first characters behind, and no redaction after
the cut could recognise them; so every excerpt of a body or an error that reaches a log line or
a message goes through `excerpt()`, which redacts the whole text first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

REDACTED = "[redacted]"
MIN_SECRET = 4  # shorter values would redact ordinary words


class Redactor:
    """Replaces every known secret value; longest first, so one inside another goes whole."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


def excerpt(text: str, limit: int, redact: Callable[[str], str]) -> str:
    """At most `limit` characters of `text`, redacted before it is cut; a cut is marked '…'."""
    clean = redact(text)
    return clean if len(clean) <= limit else clean[: max(limit - 1, 0)] + "…"
