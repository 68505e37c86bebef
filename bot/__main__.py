"""`python -m bot` is the `timbal-jobs-bot` command."""

import sys

try:
    from bot.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C while Python was still importing: no traceback
    code = 130
sys.exit(code)
