"""Administration of the network and of what it holds: sites, devices, jobs, quarantine."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import asdict
from typing import Any, Callable, Iterable, Literal

from telediag.cli.common import data_dir_option, database
from telediag.domain import RULE_SETS, JobState, NetworkError


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _print_rows(rows: Iterable[dict[str, Any]], as_json: bool, columns: list[str]) -> None:
    rows = list(rows)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, default=str))
        return
    for row in rows:
        print("\t".join("" if row.get(c) is None else str(row[c]) for c in columns))


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The command, with a request the network's shape refuses (an unknown site, a township
    without a county ...) reported as one line and exit status 2 rather than a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except NetworkError as exc:
            return _fail(exc)

    return run


def _set_active_command(kind: Literal["site", "device"]) -> Callable[[argparse.Namespace], int]:
    """``telediag site|device enable|disable NAME``: the same command for both kinds."""

    @_guarded
    def command(args: argparse.Namespace) -> int:
        from telediag.network import set_device_active, set_site_active

        set_active = set_site_active if kind == "site" else set_device_active
        set_active(database(args), args.name, args.action == "enable")
        print(f"{kind} {args.name!r} {args.action}d")
        return 0

    return command


# -- sites ---------------------------------------------------------------------------------------
@_guarded
def cmd_site_add(args: argparse.Namespace) -> int:
    from telediag.network import add_site

    site_id = add_site(database(args), args.name, args.level, args.parent)
    print(f"site {args.name!r} ({args.level}) added with id {site_id}")
    return 0


def cmd_site_list(args: argparse.Namespace) -> int:
    from telediag.network import list_sites

    sites = list_sites(database(args))
    names = {s.id: s.name for s in sites}
    _print_rows(({"id": s.id, "name": s.name, "level": s.level.value, "parent": s.parent_id,
                  "parent_name": names.get(s.parent_id), "active": s.active} for s in sites),
                args.json, ["id", "name", "level", "parent_name", "active"])
    return 0


cmd_site_active = _set_active_command("site")


@_guarded
def cmd_site_set_webhook(args: argparse.Namespace) -> int:
    from telediag.network import set_site_webhook

    url = None if args.url.lower() == "none" else args.url
    secret = set_site_webhook(database(args), args.name, url, args.secret)
    if url is None:
        print(f"site {args.name!r}: webhook removed")
    else:
        print(f"site {args.name!r}: alarms are POSTed to {url}, signed X-Telediag-Signature: sha256=HMAC")
        if not args.secret:
            print(f"webhook secret (shown once, keep it): {secret}")
    return 0


# -- devices -------------------------------------------------------------------------------------
@_guarded
def cmd_device_add(args: argparse.Namespace) -> int:
    from telediag.network import add_device

    device_id, api_key = add_device(database(args), args.name, args.site, args.ae_title, args.rules)
    print(f"device {args.name!r} added with id {device_id} at site {args.site!r}"
          + (f", AE title {args.ae_title.upper()}" if args.ae_title else "") + f", rules {args.rules}")
    print(f"API key (shown once, keep it): {api_key}")
    return 0


def cmd_device_list(args: argparse.Namespace) -> int:
    from telediag.network import list_devices

    devices = [asdict(d) for d in list_devices(database(args))]
    _print_rows(devices, args.json, ["id", "name", "site_name", "ae_title", "rules", "active"])
    return 0


cmd_device_active = _set_active_command("device")


@_guarded
def cmd_device_rotate_key(args: argparse.Namespace) -> int:
    from telediag.network import rotate_device_key

    api_key = rotate_device_key(database(args), args.name)
    print(f"device {args.name!r} has a new API key; the old one no longer works")
    print(f"API key (shown once, keep it): {api_key}")
    return 0


@_guarded
def cmd_device_set_destination(args: argparse.Namespace) -> int:
    from telediag.network.services import set_device_destination

    host = None if args.host.lower() == "none" else args.host
    device = set_device_destination(database(args), args.name, host, args.port)
    print(f"device {args.name!r} (AE {device.ae_title}) " + (f"receives C-MOVEs at {host}:{args.port}" if host
                                                              else "is no longer a C-MOVE destination"))
    return 0


# -- jobs and quarantine -------------------------------------------------------------------------
def cmd_jobs(args: argparse.Namespace) -> int:
    with database(args).uow() as uow:
        jobs = uow.jobs.list(JobState(args.state) if args.state else None)
    for job in jobs:
        print(f"{job['id']}\t{job['state']}\tobject {job['object_id']}\tattempts {job['attempts']}\t"
              f"{job['error'] or ''}")
    return 0


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    with database(args).uow() as uow:
        entries = [asdict(q) for q in uow.quarantine.list()]
    _print_rows(entries, args.json, ["id", "received_at", "device_id", "sop_instance_uid", "size", "key", "reason"])
    return 0


def add_commands(sub) -> None:
    def leaf(parent, name: str, help: str, func, json_flag: bool = False) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help)
        data_dir_option(p)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
        return p

    site = sub.add_parser("site", help="manage the network's sites").add_subparsers(dest="action", required=True)
    p = leaf(site, "add", "add a site", cmd_site_add)
    p.add_argument("name")
    p.add_argument("--level", required=True, choices=["prefecture", "county", "township"])
    p.add_argument("--parent", help="the county (for a township) or prefecture (for a county)")
    leaf(site, "list", "list sites ([{id, name, level, parent}] with --json)", cmd_site_list, json_flag=True)
    p = leaf(site, "set-webhook", "POST the alarms of a site (and of the sites below it) to URL, signed with "
                                  "HMAC-SHA256 (X-Telediag-Signature)", cmd_site_set_webhook)
    p.add_argument("name")
    p.add_argument("url", help="http(s)://...; 'none' removes the webhook")
    p.add_argument("--secret", help="the shared signing secret (default: a new one, printed once)")
    for action in ("disable", "enable"):
        leaf(site, action, f"{action} a site (its devices {'can no longer' if action == 'disable' else 'may'} "
                           f"deliver)", cmd_site_active).add_argument("name")

    device = sub.add_parser("device", help="manage devices").add_subparsers(dest="action", required=True)
    p = leaf(device, "add", "add a device; prints its API key", cmd_device_add)
    p.add_argument("name")
    p.add_argument("--site", required=True)
    p.add_argument("--ae-title", help="the calling AE title the device uses for DICOM")
    p.add_argument("--rules", default="resting", choices=list(RULE_SETS),
                   help="critical-value rules its recordings are analysed with (default resting; holter for a "
                        "Holter recorder, monitoring for a bedside or remote monitor)")
    leaf(device, "list", "list devices", cmd_device_list, json_flag=True)
    for action in ("disable", "enable"):
        leaf(device, action, f"{action} a device", cmd_device_active).add_argument("name")
    leaf(device, "rotate-key", "give a device a new API key (printed once)", cmd_device_rotate_key) \
        .add_argument("name")
    p = leaf(device, "set-destination", "make a device with an AE title (a viewer, a PACS) a C-MOVE destination "
                                        "at HOST PORT", cmd_device_set_destination)
    p.add_argument("name")
    p.add_argument("host", help="where the device listens for DICOM; 'none' removes the destination")
    p.add_argument("port", type=int, nargs="?", help="its DICOM port")

    p = leaf(sub, "jobs", "list analysis jobs (e.g. --state dead for the dead-letter list)", cmd_jobs)
    p.add_argument("--state", choices=[s.value for s in JobState])

    quarantine = sub.add_parser("quarantine", help="objects kept aside").add_subparsers(dest="action", required=True)
    leaf(quarantine, "list", "list conflicting objects kept in quarantine", cmd_quarantine_list, json_flag=True)
