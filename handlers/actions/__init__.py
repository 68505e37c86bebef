"""Interactive components (buttons, selects), one module per surface."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from handlers.actions import incidents


def register(app: AsyncApp) -> None:
    incidents.register(app)
