"""Pages: the operator dashboard (``/ui``, a placeholder for now) and the customer portal
(``/portal``, opened through the link that ``app-portal-access`` returns)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from homing import __version__

router = APIRouter(include_in_schema=False)

_CSP = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
# the dashboard is not framed by other sites; the portal is meant to be embedded in the
# customer-facing product (its token comes in the URL fragment, never sent to a server)
_PAGE_HEADERS = {
    "Content-Security-Policy": f"{_CSP}; frame-ancestors 'self'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_PORTAL_HEADERS = {**_PAGE_HEADERS, "Content-Security-Policy": f"{_CSP}; frame-ancestors *"}


@router.get("/ui", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html><head><meta charset=utf-8><title>Homing</title></head>"
        f"<body><h1>Homing {__version__}</h1><p>The dashboard is coming soon. The API is at "
        "<a href='/docs'>/docs</a>.</p></body></html>",
        headers=_PAGE_HEADERS,
    )


@router.get("/portal", response_class=HTMLResponse)
async def portal() -> HTMLResponse:
    page = resources.files("homing.ui").joinpath("static/portal.html").read_text("utf-8")
    return HTMLResponse(page, headers=_PORTAL_HEADERS)
