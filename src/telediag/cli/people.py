"""People and the audit trail: ``telediag user ...`` and ``telediag audit verify``."""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import asdict

from telediag.cli.admin import _guarded, _print_rows
from telediag.cli.common import data_dir_option, settings_from
from telediag.domain import QUALIFICATIONS, Role


def _system(args: argparse.Namespace):
    from telediag.bootstrap import System

    return System(settings_from(args))


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass("password: ")


@_guarded
def cmd_user_add(args: argparse.Namespace) -> int:
    from telediag.network import add_user

    system = _system(args)
    qualified = tuple(q.strip() for q in (args.qualified or "").split(",") if q.strip())
    user_id = add_user(system.db, system.vault, args.username, _password(args), args.role, args.site, qualified,
                       args.display_name)
    print(f"user {args.username!r} ({args.role} at {args.site!r}) added with id {user_id}"
          + (f", qualified {','.join(qualified)}, with an {system.vault.algorithm.upper()} signing key" if qualified else ""))
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from telediag.network import list_users

    users = [{**asdict(u), "role": u.role.value, "qualified": ",".join(u.qualified)}
             for u in list_users(_system(args).db)]
    _print_rows(users, args.json, ["id", "username", "display_name", "role", "site_name", "qualified", "active"])
    return 0


@_guarded
def cmd_user_active(args: argparse.Namespace) -> int:
    from telediag.network import set_user_active

    set_user_active(_system(args).db, args.username, args.action == "enable")
    print(f"user {args.username!r} {args.action}d")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every entry's hash follows from its content and its predecessor; else 1,
    naming the first entry that does not."""
    from telediag.review import verify_audit

    broken = verify_audit(_system(args).db)
    if broken is None:
        print("audit trail intact")
        return 0
    print(f"audit trail broken at entry {broken.entry_id}: {broken.reason}", file=sys.stderr)
    return 1


def add_commands(sub) -> None:
    def leaf(parent, name: str, help: str, func) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help)
        data_dir_option(p)
        p.set_defaults(func=func)
        return p

    user = sub.add_parser("user", help="manage people").add_subparsers(dest="action", required=True)
    p = leaf(user, "add", "add a person (readers also get a signing key)", cmd_user_add)
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--site", required=True, help="a township for clinic staff, a county or the prefecture otherwise")
    p.add_argument("--qualified", help=f"readers: what they read ({','.join(QUALIFICATIONS)})")
    p.add_argument("--display-name", help="the name printed on signed reports")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    leaf(user, "list", "list people", cmd_user_list).add_argument("--json", action="store_true", help="print JSON")
    for action in ("disable", "enable"):
        leaf(user, action, f"{action} a person's account", cmd_user_active).add_argument("username")

    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="action", required=True)
    leaf(audit, "verify", "check the trail's hash chain (exit 1 and name the first broken entry)", cmd_audit_verify)
