"""A studio's WHIP session: the studio offers, Meridian answers recvonly and relays."""

from __future__ import annotations

from ingest.feed import FeedSession
from relay.errors import UnsupportedOffer
from relay.negotiation import (
    answer_offer,
    apply_remote_offer,
    media_sections,
    parse_offer,
    require_relayable_codecs,
)


class StudioSession(FeedSession):
    """One WHIP publish of one studio, from offer to end."""

    async def answer(self, offer_sdp: str) -> str:
        """Negotiate: take the studio's offer, return the recvonly answer."""
        description = parse_offer(offer_sdp)
        sending = [
            m for m in media_sections(description) if m.direction in ("sendonly", "sendrecv")
        ]
        if not sending:
            raise UnsupportedOffer("the offer sends no audio or video (a=sendonly expected)")
        require_relayable_codecs(description)
        pc = self._pc
        await apply_remote_offer(pc, offer_sdp)
        for transceiver in pc.getTransceivers():
            if transceiver.kind in self._transceivers:
                transceiver.direction = "inactive"  # one feed per kind, never two mixed
                continue
            transceiver.direction = "recvonly"
            self._transceivers[transceiver.kind] = transceiver
        await answer_offer(pc)
        self._take_negotiated_codecs()
        if not self.codecs:
            supported = "H.264 (packetization-mode 1), VP8 and Opus"
            raise UnsupportedOffer(f"the offer has no codec Meridian relays; it takes {supported}")
        self._expire_unless_connected()
        return str(pc.localDescription.sdp)
