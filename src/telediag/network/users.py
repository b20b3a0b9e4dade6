"""People: accounts with a role at a site, passwords, logins and sessions.

Passwords are hashed with Argon2id. A login gives a random token (the API's bearer token,
or the pages' session cookie) stored only as its SHA-256, so a leaked database does not let
anyone log in. Five failures in a row lock the account for a while; the per-address rate
limit sits in front of this in the web stage.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from telediag.domain import (QUALIFICATIONS, LoginRefused, LoginResult, NetworkError, Principal, Role, SiteLevel,
                             UnknownSite, UserInfo)
from telediag.network.keys import KeyVault
from telediag.store import Database, RowConflict

log = logging.getLogger(__name__)

_hasher = PasswordHasher()
#: Verified against when the username is unknown, so both answers take the same time.
_DUMMY_HASH = _hasher.hash("telediag: no such user")
MIN_PASSWORD = 8


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_role_site(role: Role, level: SiteLevel, qualified: tuple[str, ...]) -> None:
    """Clinic staff work at a township; readers and center administrators at a center; the
    network's administrators at the prefecture."""
    allowed = {Role.CLINIC: {SiteLevel.TOWNSHIP}, Role.READER: {SiteLevel.COUNTY, SiteLevel.PREFECTURE},
               Role.CENTER_ADMIN: {SiteLevel.COUNTY, SiteLevel.PREFECTURE}, Role.NETWORK_ADMIN: {SiteLevel.PREFECTURE}}
    if level not in allowed[role]:
        raise NetworkError(f"a {role.value} belongs to a {' or '.join(sorted(s.value for s in allowed[role]))} site")
    unknown = set(qualified) - set(QUALIFICATIONS)
    if unknown:
        raise NetworkError(f"unknown qualification(s) {sorted(unknown)}; known: {', '.join(QUALIFICATIONS)}")
    if role is Role.READER and not qualified:
        raise NetworkError("a reader needs --qualified ecg, imaging or both")
    if role is not Role.READER and qualified:
        raise NetworkError("only readers are qualified to read")


def add_user(db: Database, vault: KeyVault, username: str, password: str, role: Role | str, site: str,
             qualified: tuple[str, ...] = (), display_name: str | None = None) -> int:
    """Register a person; a reader also gets a signing key pair."""
    role = Role(role)
    username = username.strip()
    if not username or len(username) > 64 or not all(c.isalnum() or c in "._-@" for c in username):
        raise NetworkError("a username is 1-64 letters, digits or . _ - @")
    if len(password) < MIN_PASSWORD:
        raise NetworkError(f"a password has at least {MIN_PASSWORD} characters")
    with db.uow() as uow:
        info = uow.sites.by_name(site)
        if info is None:
            raise UnknownSite(f"unknown site {site!r}")
        _check_role_site(role, info.level, tuple(qualified))
        if uow.users.exists(username):
            raise NetworkError(f"user {username!r} already exists")
        try:
            user_id = uow.users.add(username, display_name or username, _hasher.hash(password), role, info.id,
                                    tuple(qualified), vault.new_key() if role is Role.READER else None)
            uow.commit()
        except RowConflict as exc:
            raise NetworkError(f"user {username!r} already exists") from exc
    return user_id


def login(db: Database, username: str, password: str, *, ttl_s: int, max_failures: int, lockout_s: int,
          address: str | None = None) -> LoginResult:
    """Check the password and open a session; every outcome is in the audit trail."""
    now = utcnow()
    with db.uow() as uow:
        cred = uow.users.credentials(username)
        if cred is not None and cred.locked_until is not None and cred.locked_until > now:
            uow.audit.append(username=username, role="", user_id=cred.user_id, action="login_failed",
                             detail={"reason": "locked"}, address=address)
            uow.commit()
            raise LoginRefused("account locked after repeated failures",
                               retry_after=int((cred.locked_until - now).total_seconds()) + 1)
        try:
            _hasher.verify(cred.password_hash if cred else _DUMMY_HASH, password)
            ok = cred is not None and cred.active
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            locked = (uow.users.login_failed(cred.user_id, max_failures, lockout_s, now)
                      if cred is not None and cred.active else None)
            uow.audit.append(username=username[:200], role="", user_id=cred.user_id if cred else None,
                             action="login_failed", detail={"locked": locked is not None}, address=address)
            uow.commit()
            log.warning("refused a login (%s)", "account now locked" if locked else "bad credentials")
            raise LoginRefused("wrong username or password",
                               retry_after=int(lockout_s) if locked else None)
        rehash = _hasher.hash(password) if _hasher.check_needs_rehash(cred.password_hash) else None
        uow.users.login_succeeded(cred.user_id, rehash)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        uow.users.open_session(token_sha256(token), cred.user_id, csrf, address, now + timedelta(seconds=ttl_s))
        principal = uow.users.principal(token_sha256(token), now)
        uow.audit.append(username=cred.username, role=principal.role.value, user_id=cred.user_id, action="login",
                         address=address)
        uow.commit()
    return LoginResult(token, csrf, ttl_s, principal)


def logout(db: Database, token: str, principal: Principal, address: str | None = None) -> None:
    with db.uow() as uow:
        uow.users.end_session(token_sha256(token))
        uow.audit.append(username=principal.username, role=principal.role.value, user_id=principal.user_id,
                         action="logout", address=address)
        uow.commit()


def user_by_token(db: Database, token: str) -> Principal | None:
    """The person a bearer token or session cookie belongs to, while it is valid."""
    with db.uow() as uow:
        return uow.users.principal(token_sha256(token), utcnow())


def list_users(db: Database, site_ids: set[int] | None = None) -> list[UserInfo]:
    with db.uow() as uow:
        return uow.users.list(site_ids)


def set_user_active(db: Database, username: str, active: bool) -> None:
    """Disable (ending every session of) or re-enable an account."""
    with db.uow() as uow:
        if not uow.users.set_active(username, active):
            raise NetworkError(f"unknown user {username!r}")
        uow.commit()


def public_key(db: Database, username: str) -> tuple[str, str] | None:
    """(algorithm, base64 public key) of a reader's signing key, or None."""
    with db.uow() as uow:
        return uow.users.public_key(username)
