"""``python -m pipeline``: the same as the ``trackscribe`` command."""

import sys

from ._entry import main

sys.exit(main())
