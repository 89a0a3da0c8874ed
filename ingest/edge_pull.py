"""An edge node's pull of one studio from another Meridian node over WHEP.

The edge is the offerer: recvonly audio and video, sent to the upstream node's WHEP
endpoint with the cluster token, so that the upstream counts it as a downstream node
and not as a viewer. From the answer on it is a feed like a studio's: its decrypted
RTP is tapped into the edge's source, keyframe requests go upstream, and it becomes
the source's publisher once connected (replacing an earlier pull, seamlessly).

The signalling is handed in (`Signalling`), so that this module needs no HTTP client:
cluster/pulls.py speaks WHEP with clients.webrtc_client.negotiate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

from aiortc import RTCPeerConnection

from ingest.feed import FeedSession
from relay import rtc_internals
from relay.errors import UnsupportedOffer
from relay.negotiation import MEDIA_KINDS
from relay.peer_session import EndCallback
from relay.source import Source

# An upstream that vanished is noticed in about 5 s (no media, five unanswered consent
# checks), far sooner than a studio's 30 s: the edge pulls again from elsewhere at once.
# Media that keeps arriving counts as consent, so that a check answered late by a busy
# node (one at a time, no retransmission) never drops a pull that works.
PULL_CONSENT_INTERVAL = 1.0
PULL_CONSENT_FAILURES = 5
PULL_MEDIA_FRESH_SECONDS = 2.0


class Signalling(Protocol):
    """How the pull's offer reaches the upstream node, and how its session ends there."""

    async def negotiate(self, pc: RTCPeerConnection) -> None:
        """Send pc's offer, apply the answer (following redirects)."""

    async def close(self) -> None:
        """End the upstream session (WHEP DELETE), best effort."""


class EdgePull(FeedSession):
    """One pull of one studio's feed from an upstream node (an origin or another edge)."""

    def __init__(
        self,
        source: Source,
        signalling: Signalling,
        *,
        upstream: str,
        connect_timeout: float = 10.0,
        certificate: rtc_internals.SharedCertificate | None = None,
        on_end: EndCallback | None = None,
    ) -> None:
        super().__init__(
            source, connect_timeout=connect_timeout, certificate=certificate, on_end=on_end
        )
        self.upstream = upstream  # the node id pulled from (after any redirect)
        self.depth = 1  # hops from the studio's origin, set by whoever picked the upstream
        self._signalling = signalling
        self._closing_upstream: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Offer recvonly audio and video upstream and take what the answer carries."""
        pc = self._pc
        offered = {kind: pc.addTransceiver(kind, direction="recvonly") for kind in MEDIA_KINDS}
        await self._signalling.negotiate(pc)
        # The upstream answers only the kinds the studio sends; the others come back inactive.
        self._transceivers.update(
            (kind, transceiver)
            for kind, transceiver in offered.items()
            if transceiver.currentDirection == "recvonly"
        )
        self._take_negotiated_codecs()
        if not self.codecs:
            raise UnsupportedOffer("the upstream answered no codec Meridian relays")
        # Replaces the studios' policy set above: Meridian always answers consent checks.
        dtls = next(iter(self._transceivers.values())).receiver.transport
        rtc_internals.supervise_consent(
            dtls,
            rtc_internals.ConsentPolicy(
                PULL_CONSENT_INTERVAL, PULL_CONSENT_FAILURES, self._media_flowing
            ),
        )
        self._expire_unless_connected()

    def _media_flowing(self) -> bool:
        return time.monotonic() - self.last_packet_at < PULL_MEDIA_FRESH_SECONDS

    def _release(self) -> None:
        super()._release()
        self._closing_upstream = asyncio.ensure_future(self._close_upstream())

    async def _close_upstream(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._signalling.close(), 3.0)
