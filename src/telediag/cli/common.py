"""Options and settings shared by the commands."""

from __future__ import annotations

import argparse
from dataclasses import replace

from telediag.config import Settings
from telediag.store import Database


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env().with_data_dir(getattr(args, "data_dir", None))
    if getattr(args, "http_port", None) is not None:
        settings = replace(settings, http_port=args.http_port)
    if getattr(args, "dicom_port", None) is not None:
        settings = replace(settings, dicom_port=args.dicom_port)
    return settings


def database(args: argparse.Namespace) -> Database:
    """The database of the settings, migrated (every command may be the first to run)."""
    db = Database(settings_from(args).effective_database_url)
    db.migrate()
    return db


def data_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="where the embedded database and objects live (default ./telediag-data, "
                                      "or TELEDIAG_DATA_DIR)")


def port_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http-port", type=int)
    p.add_argument("--dicom-port", type=int)
