"""Test-side access to the fakes; the implementations live in bot.sim so the demo can use them."""

from bot.sim.slack_api import Call, FakeSlack
from bot.sim.timbal_api import FakeTimbal, make_job

__all__ = ["Call", "FakeSlack", "FakeTimbal", "make_job"]
