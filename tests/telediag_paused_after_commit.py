"""``python tests/telediag_paused_after_commit.py MARKER ARGS...``: the telediag command with a
fault injected through the message bus, for the crash-window tests.

The handler that publishes a stored object's job (the ``ObjectStored`` subscriber of
``telediag.bootstrap.System``) is replaced by one that writes MARKER (the process id) and
blocks: the process has committed the object and its ``pending`` job and stops before the
broker hears of it, where the test kills it. Production code has no such hook.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from telediag.bootstrap import System
from telediag.cli import main
from telediag.domain import ObjectStored


def _pause_forever(marker: Path):
    def handler(self: System, event: ObjectStored) -> None:
        marker.write_text(str(os.getpid()))
        while True:
            time.sleep(3600)

    return handler


if __name__ == "__main__":
    System._publish_job = _pause_forever(Path(sys.argv[1]))  # type: ignore[method-assign]
    sys.exit(main(sys.argv[2:]))
