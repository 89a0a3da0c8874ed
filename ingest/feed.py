"""A session that feeds a source: its RTP taken decrypted, never decoded, into the relay.

A studio publishing over WHIP is one kind; an edge pulling a studio from its origin
over WHEP is another. Both receive on one peer connection, and whichever is the
source's current publisher is the only one whose packets reach the viewers.
"""

from __future__ import annotations

import time

from aiortc import RTCRtpTransceiver
from aiortc.rtp import RtcpSrPacket, RtpPacket

from relay import rtc_internals
from relay.codecs import RelayCodec
from relay.negotiation import negotiated_codec, to_relay_codec
from relay.peer_session import EndCallback, PeerSession
from relay.source import Source


class FeedSession(PeerSession):
    def __init__(
        self,
        source: Source,
        *,
        connect_timeout: float = 30.0,
        certificate: rtc_internals.SharedCertificate | None = None,
        on_end: EndCallback | None = None,
    ) -> None:
        super().__init__(connect_timeout=connect_timeout, certificate=certificate, on_end=on_end)
        self.source = source
        self.codecs: dict[str, RelayCodec] = {}
        self.last_packet_at = 0.0
        self.packets_ignored = 0
        self.nacks_sent: dict[str, int] = {}  # per kind, NACKs sent upstream
        self._transceivers: dict[str, RTCRtpTransceiver] = {}
        self._video_ssrc: int | None = None

    def packets_lost(self) -> dict[str, int]:
        """Packets lost on the way in so far, per kind (read at scrape time)."""
        return {
            kind: rtc_internals.receiver_packets_lost(transceiver.receiver)
            for kind, transceiver in self._transceivers.items()
        }

    def request_keyframe(self) -> None:
        transceiver = self._transceivers.get("video")
        if transceiver is not None and self._video_ssrc is not None:
            self._spawn(rtc_internals.request_keyframe(transceiver.receiver, self._video_ssrc))

    def _take_negotiated_codecs(self) -> None:
        """After the answer: record each kind's codec and tap its receiver."""
        for kind, transceiver in list(self._transceivers.items()):
            codec = negotiated_codec(transceiver)
            if codec is None:
                del self._transceivers[kind]
                continue
            self.codecs[kind] = to_relay_codec(codec)
            self._tap(transceiver, kind)
        if self._transceivers:
            dtls = next(iter(self._transceivers.values())).receiver.transport
            rtc_internals.supervise_consent(dtls, rtc_internals.studio_consent(self._media_fresh))

    def _tap(self, transceiver: RTCRtpTransceiver, kind: str) -> None:
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

    def _media_fresh(self) -> bool:
        return time.monotonic() - self.last_packet_at < rtc_internals.CONSENT_GRACE_SECONDS

    def _connected(self) -> None:
        """Become the source's publisher; a feed it replaces is ended."""
        previous = self.source.publisher
        self.source.attach(self, self.codecs)
        if isinstance(previous, FeedSession) and previous is not self:
            previous.end("replaced")

    def _release(self) -> None:
        self.source.detach(self)
