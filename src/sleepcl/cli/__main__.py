"""``python -m sleepcl.cli``: the same as the ``sleepcl`` command."""

import sys

from . import main

sys.exit(main())
