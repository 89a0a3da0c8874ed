"""WHEP: viewers watch a studio. Watching is free: no token by default (a studio with
`require_viewer_token` takes only viewers with a signed viewer token, server/viewer_tokens.py).

Before a studio is live, an offer is answered `409 Conflict` with `Retry-After`
(the WHEP draft's choice); viewers already watching stay connected through a
studio's reconnect and resume at the new feed's first keyframe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from cluster.http import pulling_node
from metrics.geo import Located
from relay.viewer import ViewerSession
from server import webrtc_http
from server.state import CERTIFICATE, GEO, METRICS, SETTINGS, SOURCES
from server.viewer_tokens import require_viewer_token

log = logging.getLogger("meridian.whep")


def locate_viewer(request: web.Request) -> Located:
    """The viewer's country from the request (trusted proxy headers, else the peer address).

    A failing lookup never stops the viewer: it counts as the unknown label.
    """
    geo = request.app[GEO]
    try:
        return geo.locate(request.remote, request.headers)
    except Exception:
        log.warning("could not resolve a viewer's country; counted as unknown", exc_info=True)
        return Located(geo.unknown, "peer", refinable=False)


def open_session(request: web.Request) -> None:
    """Viewer sessions need no credentials: the session URL itself is the secret."""


async def watch(request: web.Request) -> web.Response:
    studio = webrtc_http.studio_or_404(request)
    source = request.app[SOURCES][studio.id]
    # Another Meridian node pulling the feed (a cluster edge): sent to, not counted.
    downstream = pulling_node(request) is not None
    if not downstream:  # a pull is authenticated by the cluster's token instead
        require_viewer_token(request, studio)
    offer = await webrtc_http.read_body(request, webrtc_http.SDP, "Accept-Post")
    relay = request.app[SETTINGS].current.relay
    geo, metrics = request.app[GEO], request.app[METRICS]
    located = locate_viewer(request)

    def joined(session: ViewerSession) -> None:
        # Called from the fan-out as the first keyframe goes out: whatever fails in GeoIP
        # or metrics stays here, and media goes on (the viewer keeps its first country).
        try:
            # Resolved once more at most: the media path's address, when the request's was
            # private.
            session.country = geo.refine(located, session.remote_address)
        except Exception:
            log.exception("could not place a viewer by its media address; its media goes on")
        try:
            metrics.viewer_joined(session, studio.id, session.country, session.join_seconds)
        except Exception:
            log.exception("could not count a viewer's join; its media goes on")

    def create(on_end: Callable[[object, str], None]) -> ViewerSession:
        def ended(session: ViewerSession, reason: str) -> None:
            try:
                metrics.viewer_left(session)
            except Exception:
                log.exception("could not record a viewer's leaving")
            on_end(session, reason)

        return ViewerSession(
            source,
            country=located.country,
            connect_timeout=relay.connect_timeout,
            certificate=request.app[CERTIFICATE],
            send_buffer_bytes=relay.viewer_send_buffer_bytes,
            on_end=ended,
            on_joined=None if downstream else joined,
            downstream=downstream,
        )

    return await webrtc_http.establish(request, "whep", studio.id, offer, create)


def add_routes(app: web.Application) -> None:
    webrtc_http.add_routes(app, "whep", watch, open_session)
