"""Prometheus metrics, on a registry of our own (one per runtime, so tests never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Every metric the bot exports. Passed to the parts that move them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.polls = Counter(
            "tjb_polls",
            "Poller cycles by outcome (ok, or the error kind).",
            ["outcome"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "tjb_poll_duration_seconds", "Duration of a full poller cycle.", registry=r
        )
        self.jobs_seen = Gauge("tjb_jobs_seen", "Jobs in the last listing.", registry=r)
        self.listing_bytes = Gauge(
            "tjb_timbal_listing_bytes",
            "Size of Timbal's last listing (TIMBAL_MAX_RESPONSE_MB is the ceiling).",
            registry=r,
        )
        self.events = Counter(
            "tjb_events", "Events enqueued to the outbox, by kind.", ["kind"], registry=r
        )
        self.messages = Counter(
            "tjb_messages",
            "Slack deliveries by outcome (sent, retried, dead_lettered, plain_text_fallback).",
            ["outcome"],
            registry=r,
        )
        self.slack_ratelimited = Counter(
            "tjb_slack_ratelimited", "Slack answers of 429 (rate limited).", registry=r
        )
        self.events_unrouted = Counter(
            "tjb_events_unrouted",
            "Events no channel wanted (no subscription matched, or every match was muted).",
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "tjb_outbox_backlog", "Outbox entries not yet acknowledged.", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "tjb_outbox_oldest_age_seconds", "Age of the oldest unacknowledged entry.", registry=r
        )
        self.commands = Counter(
            "tjb_slash_commands", "Slash commands by outcome.", ["outcome"], registry=r
        )
        self.command_latency = Histogram(
            "tjb_slash_command_duration_seconds",
            "Time from receiving a slash command to the reply.",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
