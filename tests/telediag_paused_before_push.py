"""``python tests/telediag_paused_before_push.py MARKER ARGS...``: the telediag command with a
fault injected through the message bus, for the push crash-window test.

The handler that sends committed alarm deliveries to the broker (the ``AlarmEventsRecorded``
subscriber of ``telediag.bootstrap.System``) is replaced by one that writes MARKER (the process
id) and blocks: the analysis result, its alarms and their deliveries are committed and nothing
is pushed yet, where the test kills the process. Production code has no such hook.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from telediag.bootstrap import System
from telediag.cli import main
from telediag.domain import AlarmEventsRecorded


def _pause_forever(marker: Path):
    def handler(self: System, event: AlarmEventsRecorded) -> None:
        marker.write_text(str(os.getpid()))
        while True:
            time.sleep(3600)

    return handler


if __name__ == "__main__":
    System._publish_deliveries = _pause_forever(Path(sys.argv[1]))  # type: ignore[method-assign]
    sys.exit(main(sys.argv[2:]))
