"""WHEP: viewers watch a studio. Watching is free: no token by default.

Before a studio is live, an offer is answered `409 Conflict` with `Retry-After`
(the WHEP draft's choice); viewers already watching stay connected through a
studio's reconnect and resume at the new feed's first keyframe.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from metrics.geo import Located
from relay.viewer import ViewerSession
from server import webrtc_http
from server.state import CERTIFICATE, GEO, METRICS, SETTINGS, SOURCES


def locate_viewer(request: web.Request) -> Located:
    """The viewer's country from the request (trusted proxy headers, else the peer address)."""
    return request.app[GEO].locate(request.remote, request.headers)


def open_session(request: web.Request) -> None:
    """Viewer sessions need no credentials: the session URL itself is the secret."""


async def watch(request: web.Request) -> web.Response:
    studio = webrtc_http.studio_or_404(request)
    offer = await webrtc_http.read_body(request, webrtc_http.SDP, "Accept-Post")
    relay = request.app[SETTINGS].relay
    source = request.app[SOURCES][studio.id]
    geo, metrics = request.app[GEO], request.app[METRICS]
    located = locate_viewer(request)

    def joined(session: ViewerSession) -> None:
        # Resolved once more at most: the media path's address, when the request's was private.
        session.country = geo.refine(located, session.remote_address)
        metrics.viewer_joined(session, studio.id, session.country, session.join_seconds)

    def create(on_end: Callable[[object, str], None]) -> ViewerSession:
        def ended(session: ViewerSession, reason: str) -> None:
            metrics.viewer_left(session)
            on_end(session, reason)

        return ViewerSession(
            source,
            country=located.country,
            connect_timeout=relay.connect_timeout,
            certificate=request.app[CERTIFICATE],
            send_buffer_bytes=relay.viewer_send_buffer_bytes,
            on_end=ended,
            on_joined=joined,
        )

    return await webrtc_http.establish(request, "whep", studio.id, offer, create)


def add_routes(app: web.Application) -> None:
    webrtc_http.add_routes(app, "whep", watch, open_session)
