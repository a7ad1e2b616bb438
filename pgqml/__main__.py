"""``python -m pgqml``: the ``pgqml`` command."""

import sys

from pgqml.cli import main

sys.exit(main())
