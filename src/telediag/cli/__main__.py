"""``python -m telediag.cli``: the same as the ``telediag`` command."""

import sys

from telediag.cli import main

sys.exit(main())
