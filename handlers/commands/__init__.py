"""Slash commands, one module each."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from handlers.commands import jobs


def register(app: AsyncApp) -> None:
    jobs.register(app)
