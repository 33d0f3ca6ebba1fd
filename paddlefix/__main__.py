"""``python -m paddlefix``: the same as the ``paddlefix`` command."""

import sys

from .cli import main

sys.exit(main())
