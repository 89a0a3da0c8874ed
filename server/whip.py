"""WHIP (RFC 9725): studios publish their feeds.

A second authenticated publish for a studio that is already live takes over once it
connects: the old session is ended and viewers switch to the new feed at its first
keyframe, so a studio that lost its link can come back at once. Two feeds are never
mixed: only the current session's packets reach the relay.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ingest.studio import StudioSession
from server import webrtc_http
from server.state import CERTIFICATE, SETTINGS, SOURCES


def authorize_session(request: web.Request) -> None:
    webrtc_http.require_bearer(request, webrtc_http.studio_or_404(request))


async def publish(request: web.Request) -> web.Response:
    studio = webrtc_http.studio_or_404(request)
    webrtc_http.require_bearer(request, studio)
    source = request.app[SOURCES][studio.id]
    offer = await webrtc_http.read_body(request, webrtc_http.SDP, "Accept-Post")
    relay = request.app[SETTINGS].current.relay
    certificate = request.app[CERTIFICATE]

    def create(on_end: Callable[[object, str], None]) -> StudioSession:
        return StudioSession(
            source,
            connect_timeout=relay.connect_timeout,
            certificate=certificate,
            on_end=on_end,
        )

    return await webrtc_http.establish(request, "whip", studio.id, offer, create)


def add_routes(app: web.Application) -> None:
    webrtc_http.add_routes(app, "whip", publish, authorize_session)
