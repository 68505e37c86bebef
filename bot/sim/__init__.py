"""Stand-ins for Slack and Timbal over real HTTP on 127.0.0.1.

Used by `timbal-jobs-bot demo` (no credentials needed) and by the test suite, so the real
slack_sdk, Bolt and httpx code runs against them.
"""
