"""A studio's WHIP session: receive its RTP decrypted but never decoded, feed the relay."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpTransceiver
from aiortc.rtp import RtcpSrPacket, RtpPacket

from relay import rtc_internals
from relay.codecs import RelayCodec
from relay.errors import UnsupportedOffer
from relay.negotiation import (
    add_remote_candidate,
    apply_remote_offer,
    media_sections,
    negotiated_codec,
    parse_offer,
    require_relayable_codecs,
    to_relay_codec,
)
from relay.source import Source
from relay.track import OutputTrack

log = logging.getLogger("meridian.studio")


class StudioSession:
    """One WHIP publish of one studio, from offer to end."""

    def __init__(
        self,
        source: Source,
        *,
        connect_timeout: float = 30.0,
        certificate: rtc_internals.SharedCertificate | None = None,
        on_end: Callable[[StudioSession, str], None] | None = None,
    ) -> None:
        self.source = source
        self.created_at = time.monotonic()
        self.end_reason: str | None = None
        self.codecs: dict[str, RelayCodec] = {}
        self.last_packet_at = 0.0
        self.packets_ignored = 0
        self.nacks_sent: dict[str, int] = {}  # per kind, NACKs sent to the studio
        self.ended = asyncio.Event()
        self._pc = rtc_internals.new_peer_connection(certificate)
        self._transceivers: dict[str, RTCRtpTransceiver] = {}
        self._video_ssrc: int | None = None
        self._connect_timeout = connect_timeout
        self._on_end = on_end
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Future[None] | None = None

    @property
    def connected(self) -> bool:
        return self._pc.connectionState == "connected"

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
        pc.on("connectionstatechange", self._on_connection_state)
        await apply_remote_offer(pc, offer_sdp)
        for transceiver in pc.getTransceivers():
            if transceiver.kind in self._transceivers:
                transceiver.direction = "inactive"  # one feed per kind, never two mixed
                continue
            transceiver.direction = "recvonly"
            self._transceivers[transceiver.kind] = transceiver
        await pc.setLocalDescription(await pc.createAnswer())
        for kind, transceiver in list(self._transceivers.items()):
            codec = negotiated_codec(transceiver)
            if codec is None:
                del self._transceivers[kind]
                continue
            self.codecs[kind] = to_relay_codec(codec)
            self._tap(transceiver, self.source.tracks.get(kind), kind)
        if not self.codecs:
            await pc.close()
            supported = "H.264 (packetization-mode 1), VP8 and Opus"
            raise UnsupportedOffer(f"the offer has no codec Meridian relays; it takes {supported}")
        dtls = next(iter(self._transceivers.values())).receiver.transport
        rtc_internals.supervise_consent(dtls, rtc_internals.studio_consent(self._media_fresh))
        self._spawn(self._expire_if_not_connected())
        return str(pc.localDescription.sdp)

    def _tap(self, transceiver: RTCRtpTransceiver, _: OutputTrack | None, kind: str) -> None:
        codec = self.codecs[kind]
        receiver = transceiver.receiver
        accepted: set[int] = set()

        def on_packet(packet: RtpPacket) -> None:
            if not accepted:
                accepted.update(
                    pt
                    for pt, c in rtc_internals.receiver_codecs(receiver).items()
                    if to_relay_codec(c) == codec
                )
            self.last_packet_at = time.monotonic()
            if packet.payload_type not in accepted or not self.source.is_current(self):
                self.packets_ignored += 1
                return
            if kind == "video":
                self._video_ssrc = packet.ssrc
            self.source.tracks[kind].forward(
                packet.ssrc, packet.sequence_number, packet.timestamp, packet.marker, packet.payload
            )

        def on_sender_report(report: RtcpSrPacket) -> None:
            if self.source.is_current(self):
                info = report.sender_info
                self.source.tracks[kind].take_sender_report(info.ntp_timestamp, info.rtp_timestamp)

        def on_nack() -> None:
            self.nacks_sent[kind] = self.nacks_sent.get(kind, 0) + 1

        rtc_internals.tap_receiver(receiver, on_packet, on_sender_report)
        rtc_internals.count_nacks_sent(receiver, on_nack)

    def packets_lost(self) -> dict[str, int]:
        """Packets lost on the way from the studio so far, per kind (read at scrape time)."""
        return {
            kind: rtc_internals.receiver_packets_lost(transceiver.receiver)
            for kind, transceiver in self._transceivers.items()
        }

    def request_keyframe(self) -> None:
        transceiver = self._transceivers.get("video")
        if transceiver is not None and self._video_ssrc is not None:
            self._spawn(rtc_internals.request_keyframe(transceiver.receiver, self._video_ssrc))

    async def add_ice_candidate(self, candidate_sdp: str, mid: str | None) -> None:
        await add_remote_candidate(self._pc, candidate_sdp, mid)

    def end(self, reason: str) -> None:
        """Stop publishing and close the peer connection; safe to call more than once."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self.source.detach(self)
        for task in self._tasks:
            task.cancel()
        self._closing = asyncio.ensure_future(self._close())
        if self._on_end is not None:
            self._on_end(self, reason)

    async def _close(self) -> None:
        try:
            await self._pc.close()
        finally:
            self.ended.set()

    def _media_fresh(self) -> bool:
        return time.monotonic() - self.last_packet_at < rtc_internals.CONSENT_GRACE_SECONDS

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        if state == "connected" and self.end_reason is None:
            previous = self.source.publisher
            self.source.attach(self, self.codecs)
            if isinstance(previous, StudioSession) and previous is not self:
                previous.end("replaced")
        elif state in ("failed", "closed"):
            self.end("ice_failed" if state == "failed" else "closed_by_peer")

    async def _expire_if_not_connected(self) -> None:
        await asyncio.sleep(self._connect_timeout)
        if not self.connected:
            self.end("timeout")
