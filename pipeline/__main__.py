"""``python -m pipeline``: the same as the ``trackscribe`` command."""

import sys

from .cli import main

sys.exit(main())
