"""Pure rendering of Slack messages: Block Kit built with slack_sdk's models, always in limits.

Nothing here does I/O or reads the clock; callers pass `now`.
"""
