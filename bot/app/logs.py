"""Logging: readable lines by default, JSON with LOG_FORMAT=json, secrets always redacted."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

from bot.redaction import REDACTED, Redactor

__all__ = ["REDACTED", "JsonFormatter", "RedactSecrets", "setup_logging"]


class RedactSecrets(logging.Filter):
    """Replace every known secret value in a record's final message (and exception text).

    The last line of defence: text cut before it gets here may hold part of a secret that no
    filter can recognise, which is why excerpts are made with `bot.redaction.excerpt`.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._clean = Redactor(secrets)
        self.secrets = self._clean.secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self._clean(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                formatter = logging.Formatter()
                record.exc_text = self._clean(formatter.formatException(record.exc_info))
                record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc"] = record.exc_text
        return json.dumps(payload, ensure_ascii=False)


def setup_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once: one handler on stderr, the redaction filter on it."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Bolt and aiohttp are chatty at INFO; keep their warnings.
    for noisy in ("slack_bolt", "slack_sdk", "aiohttp.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
