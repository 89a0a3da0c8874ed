"""The pages people use: the programme, the player, the studio's publisher, the audience.

The pages are static HTML and small ES modules in `server/static/` (no build step); they
read the JSON API and speak WHIP and WHEP themselves, through `meridian-client.js`, which
other sites may load too. The world map's country shapes are a file generated from a
registry package (`make world-map`) and served from here: nothing comes from a CDN.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from server.state import SETTINGS

STATIC_DIR = Path(__file__).resolve().parent / "static"


def content_security_policy(connect_src: str) -> str:
    """Every page script and style is served from here; media may come from blob: URLs
    (the preview); the pages talk to `connect_src` only."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "media-src 'self' blob: mediastream:",
            f"connect-src {connect_src}",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ]
    )


CONTENT_SECURITY_POLICY = content_security_policy("'self'")
# In a cluster a WHEP offer is redirected (307) to an edge on another origin, which the
# player must be allowed to follow; the edges' addresses live in Redis, not in the config.
CLUSTER_CONTENT_SECURITY_POLICY = content_security_policy("'self' http: https:")
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
# Only the studio page may ask for the camera and microphone.
STUDIO_PERMISSIONS = "camera=(self), microphone=(self), fullscreen=(self)"
OTHER_PERMISSIONS = "camera=(), microphone=(), fullscreen=(self)"


def page(
    request: web.Request, name: str, *, status: int = 200, permissions: str = OTHER_PERMISSIONS
) -> web.FileResponse:
    headers = {**PAGE_HEADERS, "Permissions-Policy": permissions}
    if request.app[SETTINGS].current.cluster.role != "single":
        headers["Content-Security-Policy"] = CLUSTER_CONTENT_SECURITY_POLICY
    return web.FileResponse(STATIC_DIR / name, status=status, headers=headers)


def known_studio(request: web.Request) -> bool:
    return request.app[SETTINGS].current.studio(request.match_info["studio"]) is not None


async def programme(request: web.Request) -> web.FileResponse:
    return page(request, "index.html")


async def watch(request: web.Request) -> web.FileResponse:
    if not known_studio(request):
        return page(request, "not-found.html", status=404)
    return page(request, "watch.html")


async def studio(request: web.Request) -> web.FileResponse:
    if not known_studio(request):
        return page(request, "not-found.html", status=404)
    return page(request, "studio.html", permissions=STUDIO_PERMISSIONS)


async def audience(request: web.Request) -> web.FileResponse:
    return page(request, "audience.html")


async def static_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Static files are revalidated (ETag, Last-Modified) so that a deploy shows at once."""
    if request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-cache")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", programme)
    app.router.add_get("/watch/{studio}", watch)
    app.router.add_get("/studio/{studio}", studio)
    app.router.add_get("/audience", audience)
    app.router.add_static("/static", STATIC_DIR, append_version=False)
    app.on_response_prepare.append(static_headers)
