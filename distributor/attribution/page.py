"""The usage attribution page at /usage/ on the server port: static HTML, JavaScript and CSS shipped in
the package (distributor/attribution/page/), no build step and nothing from elsewhere.

The page calls the Usage Attribution API and /api/overrides from the browser with the user's key pair;
it is served without any secret. Every answer carries a strict Content-Security-Policy (scripts only
from this origin, no inline script or style): keys live in the page's session storage, so an injected
script would be the one way to steal them. Files are revalidated on each load (an ETag, `no-cache`), so
an upgraded service is never paired with an old script cached by the browser.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

PAGE_PATH = "/usage/"
# The files the page is made of, and their content types; anything else under /usage/ is a 404.
PAGE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class PageFile:
    content: bytes
    content_type: str
    etag: str


def load_page_files() -> dict[str, PageFile]:
    """Every file of the page, read once from the installed package."""
    folder = resources.files("distributor.attribution").joinpath("page")
    files = {}
    for name, content_type in PAGE_FILES.items():
        content = folder.joinpath(name).read_bytes()
        files[name] = PageFile(content, content_type, '"' + hashlib.sha256(content).hexdigest()[:32] + '"')
    return files


class UsagePage:
    def __init__(self) -> None:
        self.files = load_page_files()

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/usage", self.redirect),
            web.get(PAGE_PATH, self.index),
            web.get(PAGE_PATH + "{name}", self.asset),
        ]

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(PAGE_PATH)

    async def index(self, request: web.Request) -> web.Response:
        return self._serve(request, "index.html")

    async def asset(self, request: web.Request) -> web.Response:
        return self._serve(request, request.match_info["name"])

    def _serve(self, request: web.Request, name: str) -> web.Response:
        page_file = self.files.get(name)
        if page_file is None:
            return web.Response(status=404, text="not found\n", headers=SECURITY_HEADERS)
        headers = {**SECURITY_HEADERS, "ETag": page_file.etag}
        if page_file.etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=page_file.content, headers={**headers, "Content-Type": page_file.content_type}
        )
