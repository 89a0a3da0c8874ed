"""A WHIP/WHEP client over aiortc: POST the offer, apply the answer, DELETE at the end.

The demo studio publishes with it, and the tests and benchmarks use it as studios
and viewers that speak the protocols exactly as a third-party client would.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription


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


async def negotiate(
    http: aiohttp.ClientSession, endpoint: str, pc: RTCPeerConnection, token: str | None = None
) -> RemoteSession:
    """Send pc's offer to a WHIP or WHEP endpoint and apply the answer.

    aiortc gathers every candidate before createOffer returns, so the offer is
    complete and no trickle is needed.
    """
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp", **bearer(token)}
    async with http.post(endpoint, data=pc.localDescription.sdp, headers=headers) as response:
        body = await response.text()
        if response.status != 201:
            raise WebRtcHttpError(response.status, body, dict(response.headers))
        location = urljoin(str(response.url), response.headers["Location"])
        etag = response.headers.get("ETag")
    await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
    return RemoteSession(location, etag, body)


async def end_session(
    http: aiohttp.ClientSession, session: RemoteSession, token: str | None = None
) -> int:
    async with http.delete(session.url, headers=bearer(token)) as response:
        return response.status
