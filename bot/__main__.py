"""`python -m bot` is the `timbal-jobs-bot` command."""

import sys

from bot.cli import main

sys.exit(main())
