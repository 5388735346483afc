"""``python -m ignite``: the same commands as the ``ignite`` console script."""

import sys

from ._cli import main

sys.exit(main())
