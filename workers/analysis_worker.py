"""Entry point of an analysis worker for the distributed mode.

Configure with ``TELEDIAG_DATABASE_URL``, ``TELEDIAG_OBJECT_STORE_URL`` and
``TELEDIAG_BROKER_URL``; run as many as the load needs, on any machine that reaches
the database, the object store and the broker. Same as ``telediag worker``.
"""

import sys

from telediag.cli import main

if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
