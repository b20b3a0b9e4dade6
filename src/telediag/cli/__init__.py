"""The ``telediag`` command: an entry point that parses arguments and calls a use case.

Scripts and operators rely on these names and options; keep them stable.
"""

from __future__ import annotations

import argparse
import logging

from telediag.cli import admin, people, serve, tools


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pynetdicom", "dramatiq", "pika", "urllib3", "alembic", "httpx", "fontTools"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="telediag", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (serve, admin, people, tools):
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "quiet_logging", False):
        _logging(args.verbose)
    return args.func(args)

