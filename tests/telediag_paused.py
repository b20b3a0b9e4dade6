"""``python tests/telediag_paused.py HANDLER MARKER ARGS...``: the telediag command with a fault
injected through the message bus, for the crash-window tests.

HANDLER names the ``telediag.bootstrap.System`` event handler to replace with one that writes
MARKER (the process id) and blocks, so the test can kill the process right there:

- ``_publish_job`` (``ObjectStored``): the object and its ``pending`` job are committed and the
  broker has not heard of the job;
- ``_publish_deliveries`` (``AlarmEventsRecorded``): the analysis result, its alarms and their
  deliveries are committed and nothing is pushed yet.

Production code has no such hook.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from telediag.bootstrap import System
from telediag.cli import main

HANDLERS = ("_publish_job", "_publish_deliveries")


def _pause_forever(marker: Path):
    def handler(self: System, event: object) -> None:
        marker.write_text(str(os.getpid()))
        while True:
            time.sleep(3600)

    return handler


if __name__ == "__main__":
    handler_name, marker = sys.argv[1], Path(sys.argv[2])
    assert handler_name in HANDLERS, handler_name
    setattr(System, handler_name, _pause_forever(marker))
    sys.exit(main(sys.argv[3:]))
