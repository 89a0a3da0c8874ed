"""A WHIP/WHEP client over aiortc: POST the offer, apply the answer, DELETE at the end.

The demo studio publishes with it, and the tests and benchmarks use it as studios
and viewers that speak the protocols exactly as a third-party client would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from yarl import URL


class WebRtcHttpError(Exception):
    def __init__(self, status: int, body: str, headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body
        self.headers = headers


@dataclass
class RemoteSession:
    url: str  # the session URL the server gave in Location
    etag: str | None
    answer: str


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


# Enough for a cluster's entry node -> edge hop and a pull redirected down a tree.
MAX_REDIRECTS = 5
_REDIRECTS = (307, 308)


def same_origin(a: str, b: str) -> bool:
    ua, ub = URL(a), URL(b)
    return (ua.scheme, ua.host, ua.port) == (ub.scheme, ub.host, ub.port)


async def negotiate(
    http: aiohttp.ClientSession,
    endpoint: str,
    pc: RTCPeerConnection,
    token: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    token_follows: Callable[[str], bool] | None = None,
) -> RemoteSession:
    """Send pc's offer to a WHIP or WHEP endpoint and apply the answer.

    aiortc gathers every candidate before createOffer returns, so the offer is
    complete and no trickle is needed. A `307`/`308` (a cluster sending a viewer to an
    edge) is followed with the same offer, as a browser's fetch does; the bearer token
    goes along to the same origin only, or wherever `token_follows(url)` allows (a
    cluster's own nodes). The session URL is resolved against the URL that answered.
    """
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    url = endpoint
    for _ in range(MAX_REDIRECTS + 1):
        sent = {"Content-Type": "application/sdp", **(headers or {})}
        if same_origin(url, endpoint) or (token_follows is not None and token_follows(url)):
            sent.update(bearer(token))
        async with http.post(url, data=offer, headers=sent, allow_redirects=False) as response:
            body = await response.text()
            if response.status in _REDIRECTS and "Location" in response.headers:
                url = urljoin(str(response.url), response.headers["Location"])
                continue
            if response.status != 201:
                raise WebRtcHttpError(response.status, body, dict(response.headers))
            location = urljoin(str(response.url), response.headers["Location"])
            etag = response.headers.get("ETag")
        await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        return RemoteSession(location, etag, body)
    raise WebRtcHttpError(307, f"more than {MAX_REDIRECTS} redirects from {endpoint}", {})


async def end_session(
    http: aiohttp.ClientSession, session: RemoteSession, token: str | None = None
) -> int:
    async with http.delete(session.url, headers=bearer(token)) as response:
        return response.status
