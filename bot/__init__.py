"""timbal-jobs-bot: Slack `/jobs` command and exactly-once connector job alerts."""

__version__ = "0.1.0"
