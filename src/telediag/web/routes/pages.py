"""The pages readers, clinics and administrators use.

Each page is a server-rendered shell; its script calls the JSON API (docs/review-api.md) with
the page session's cookie. Everything a page loads comes from this package (``STATIC_URL``):
health networks run on private networks without internet, and the Content-Security-Policy
below makes the browser refuse anything else.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from telediag import __version__
from telediag.domain import Principal, Role
from telediag.web import deps

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parents[1] / "pages" / "static"


def _content_digest(folder: Path) -> str:
    """A short digest of every file's name and bytes: a new release gets new asset URLs."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


#: The assets' URL names their content, so browsers keep them without asking again (no request
#: shares the server with a page's data), and an upgrade is a new URL: a clinic never runs the
#: scripts of the previous version.
STATIC_URL = f"/static/{_content_digest(STATIC_DIR)}"

_templates = Environment(loader=PackageLoader("telediag.web.pages", "templates"),
                         autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)

#: Where each role lands after login.
HOME = {Role.READER: "/reader", Role.CLINIC: "/clinic", Role.CENTER_ADMIN: "/admin", Role.NETWORK_ADMIN: "/admin"}

_HEADERS = {
    # Same origin only: no CDN, font or script from outside can load even by mistake.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # A page shows who is logged in: never from a shared cache or the back button after logout.
    "Cache-Control": "no-store",
}


class Assets(StaticFiles):
    """The pages' scripts and styles, cached for good under their content's URL (``STATIC_URL``)."""

    def file_response(self, *args, **kwargs) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


#: Mounted by ``telediag.web.app`` at ``STATIC_URL``.
assets = Assets(directory=STATIC_DIR)


def _render(template: str, principal: Principal | None, status_code: int = 200, **context) -> HTMLResponse:
    html = _templates.get_template(template).render(user=principal, static=STATIC_URL, version=__version__,
                                                    home=HOME.get(principal.role) if principal else None, **context)
    return HTMLResponse(html, status_code=status_code, headers=_HEADERS)


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _page(request: Request, template: str, roles: tuple[Role, ...], **context) -> Response:
    """The page for a logged-in user of one of ``roles``; login without a session, 403 for
    another role (the page would only fail on every API call)."""
    principal = deps.page_principal(request)
    if principal is None or not principal.is_user:
        return _to_login(request)
    if principal.role not in roles:
        return _render("forbidden.html", principal, status_code=403)
    return _render(template, principal, **context)


@router.get("/login")
def login_page(request: Request, error: str | None = None, next: str | None = None) -> Response:
    principal = deps.page_principal(request)
    if principal is not None and principal.is_user:
        return RedirectResponse("/", status_code=303)
    # Only a path of this site is carried through the login (no open redirect).
    safe_next = next if next and next.startswith("/") and not next.startswith("//") else None
    return _render("login.html", None, error=error, next=safe_next)


@router.get("/")
def home(request: Request) -> Response:
    principal = deps.page_principal(request)
    if principal is None or not principal.is_user or principal.role not in HOME:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(HOME[principal.role], status_code=303)


@router.get("/reader")
def reader_page(request: Request) -> Response:
    return _page(request, "reader.html", (Role.READER,), case_id=None)


@router.get("/reader/cases/{case_id}")
def reader_case_page(request: Request, case_id: int) -> Response:
    """The workstation with one case open (a link a colleague can send, or a reload)."""
    return _page(request, "reader.html", (Role.READER,), case_id=case_id)


@router.get("/clinic")
def clinic_page(request: Request) -> Response:
    return _page(request, "clinic.html", (Role.CLINIC,))


@router.get("/admin")
def admin_page(request: Request) -> Response:
    return _page(request, "admin.html", (Role.CENTER_ADMIN, Role.NETWORK_ADMIN))
