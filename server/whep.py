"""WHEP: viewers watch a studio. Watching is free: no token by default.

Before a studio is live, an offer is answered `409 Conflict` with `Retry-After`
(the WHEP draft's choice); viewers already watching stay connected through a
studio's reconnect and resume at the new feed's first keyframe.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from relay.viewer import ViewerSession
from server import webrtc_http
from server.state import SETTINGS, SOURCES


def viewer_country(request: web.Request) -> str:
    """Resolved by the geography layer when configured; `unknown` until then."""
    return "unknown"


def open_session(request: web.Request) -> None:
    """Viewer sessions need no credentials: the session URL itself is the secret."""


async def watch(request: web.Request) -> web.Response:
    studio = webrtc_http.studio_or_404(request)
    offer = await webrtc_http.read_body(request, webrtc_http.SDP, "Accept-Post")
    relay = request.app[SETTINGS].relay
    source = request.app[SOURCES][studio.id]
    country = viewer_country(request)

    def create(on_end: Callable[[object, str], None]) -> ViewerSession:
        return ViewerSession(
            source,
            country=country,
            connect_timeout=relay.connect_timeout,
            send_buffer_bytes=relay.viewer_send_buffer_bytes,
            on_end=on_end,
        )

    return await webrtc_http.establish(request, "whep", studio.id, offer, create)


def add_routes(app: web.Application) -> None:
    webrtc_http.add_routes(app, "whep", watch, open_session)
