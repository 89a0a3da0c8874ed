"""A viewer's WebRTC session: aiortc negotiates, the relay sends the studio's RTP as is."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
)

from relay import rtc_internals
from relay.errors import StudioOffline, UnsupportedOffer
from relay.fanout import SendEntry
from relay.negotiation import (
    answer_offer,
    answer_only_with,
    apply_remote_offer,
    negotiated_codec,
    parse_offer,
    require_viewer_codecs,
)
from relay.peer_session import PeerSession
from relay.rtcp import sender_report, source_description
from relay.source import Source
from relay.track import OutputTrack, build_rtp

log = logging.getLogger("meridian.viewer")


class _HeldTrack(MediaStreamTrack):
    """Gives aiortc's sender a track that never yields a frame, so it never encodes."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.Event().wait()
        raise MediaStreamError


class ViewerTrackSink:
    """The per-viewer end of one track, as a fan-out group sends to it."""

    __slots__ = (
        "_on_failure",
        "_on_first_keyframe",
        "_on_slow",
        "dropped",
        "entry",
        "first_keyframe_at",
        "group_base",
        "payload_type",
        "protect_rtcp",
        "sent_octets",
        "sent_packets",
        "slow_since",
        "track",
    )

    def __init__(
        self,
        track: OutputTrack,
        payload_type: int,
        path: rtc_internals.MediaPath,
        on_slow: Callable[[], None],
        on_first_keyframe: Callable[[], None] | None = None,
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self.track = track
        self.payload_type = payload_type
        self.entry: SendEntry = (path.protect, path.udp.send)
        self.protect_rtcp = path.protect_rtcp
        self._on_slow = on_slow
        self._on_first_keyframe = on_first_keyframe
        self._on_failure = on_failure
        self.first_keyframe_at: float | None = None
        self.sent_packets = 0
        self.sent_octets = 0
        self.dropped = 0
        self.group_base: tuple[int, int] | None = None
        self.slow_since: int | None = None

    @property
    def packets(self) -> int:
        return self.track.sent_to(self)[0]

    @property
    def octets(self) -> int:
        return self.track.sent_to(self)[1]

    def started(self) -> None:
        if self.first_keyframe_at is None:
            self.first_keyframe_at = time.monotonic()
            if self._on_first_keyframe is not None:
                self._on_first_keyframe()

    def fell_behind(self) -> None:
        self._on_slow()

    def failed(self) -> None:
        self._on_failure()

    def retransmit(self, sequence_numbers: list[int]) -> int:
        """Answer a NACK from the track's packet cache; returns how many were resent."""
        if self.group_base is None:
            return 0  # waiting for a keyframe: old packets would not help
        protect, send = self.entry
        track = self.track
        resent = 0
        for sequence_number in sequence_numbers:
            cached = track.cache.get(sequence_number)
            if cached is not None:
                send(protect(build_rtp(self.payload_type, cached, track.ssrc)))
                self.sent_packets += 1
                self.sent_octets += len(cached.payload)
                track.retransmitted += 1
                track.retransmitted_octets += len(cached.payload)
                resent += 1
        return resent

    def send_raw_rtcp(self, packet: bytes) -> None:
        self.entry[1](self.protect_rtcp(packet))


class ViewerSession(PeerSession):
    """One WHEP viewer of one studio, from offer to end."""

    def __init__(
        self,
        source: Source,
        *,
        country: str = "unknown",
        connect_timeout: float = 30.0,
        certificate: rtc_internals.SharedCertificate | None = None,
        send_buffer_bytes: int = 256 * 1024,
        on_end: Callable[[ViewerSession, str], None] | None = None,
        on_joined: Callable[[ViewerSession], None] | None = None,
        downstream: bool = False,
    ) -> None:
        super().__init__(connect_timeout=connect_timeout, certificate=certificate, on_end=on_end)
        self.source = source
        self.country = country
        # Another relay node pulling the feed (a cluster edge), not a person watching.
        self.downstream = downstream
        self.connected_at: float | None = None
        self.sinks: dict[str, ViewerTrackSink] = {}
        self.nacks_received = 0
        self.retransmitted = 0
        self.keyframe_requests_received = 0
        self._payload_types: dict[str, int] = {}
        self._transceivers: dict[str, RTCRtpTransceiver] = {}
        self._send_buffer_bytes = send_buffer_bytes
        self._paths: dict[int, rtc_internals.MediaPath] = {}  # by DTLS transport
        self._on_joined = on_joined
        # The ICE-selected remote address of the media path, once connected.
        self.remote_address: str | None = None

    @property
    def flowing(self) -> bool:
        """Media reaches this viewer: connected and attached to the studio's tracks."""
        return bool(self.sinks) and self.end_reason is None

    @property
    def join_seconds(self) -> float | None:
        """From the WHEP offer to the first keyframe sent (first packet for audio only)."""
        sink = self.sinks.get("video") or self.sinks.get("audio")
        if sink is None or sink.first_keyframe_at is None:
            return None
        return sink.first_keyframe_at - self.created_at

    async def answer(self, offer_sdp: str) -> str:
        """Negotiate: take the viewer's offer, return the sendonly answer."""
        description = parse_offer(offer_sdp)
        codecs = self.source.codecs()
        if not self.source.live or not codecs:
            raise StudioOffline(f"studio {self.source.studio_id!r} is not live")
        self._payload_types = require_viewer_codecs(description, codecs)
        pc = self._pc
        await apply_remote_offer(pc, offer_sdp)
        taken: dict[str, RTCRtpTransceiver] = {}
        for transceiver in pc.getTransceivers():
            kind = transceiver.kind
            if kind not in self._payload_types or kind in taken:
                continue
            taken[kind] = transceiver
            track = self.source.tracks[kind]
            answer_only_with(transceiver, codecs[kind])
            transceiver.sender.replaceTrack(_HeldTrack(kind))
            transceiver.direction = "sendonly"
            rtc_internals.drop_unused_receiver_state(transceiver.receiver)
            rtc_internals.take_over_sender(transceiver.sender, track.ssrc, self._rtcp_handler(kind))
        await answer_offer(pc)
        self._transceivers = taken
        transports = {id(t.sender.transport): t.sender.transport for t in taken.values()}
        for transport in transports.values():  # one with BUNDLE
            rtc_internals.supervise_consent(transport, rtc_internals.VIEWER_CONSENT)
        for kind, transceiver in taken.items():
            codec = negotiated_codec(transceiver)
            if codec is None or codec.payloadType is None:
                raise UnsupportedOffer(f"no {kind} codec could be negotiated")
            self._payload_types[kind] = codec.payloadType
        if self.downstream:
            self.source.add_downstream(self)
        else:
            self.source.add_viewer(self)
        self._expire_unless_connected()
        return str(pc.localDescription.sdp)

    def _release(self) -> None:
        for kind, sink in self.sinks.items():
            self.source.tracks[kind].remove_sink(sink)
        for path in self._paths.values():
            path.close()
        self.source.remove_viewer(self)
        self.source.remove_downstream(self)

    def _connected(self) -> None:
        if not self.sinks:
            self._start_media()

    def _start_media(self) -> None:
        # The viewer has joined when the picture starts, or the sound for audio only.
        joined_by = "video" if "video" in self._transceivers else "audio"
        for kind, transceiver in self._transceivers.items():
            transport = transceiver.sender.transport
            path = self._paths.get(id(transport))  # one for all kinds with BUNDLE
            if path is None:
                path = rtc_internals.media_path(transport, self._send_buffer_bytes)
                if path is None:
                    self.end("ice_failed")
                    return
                self._paths[id(transport)] = path
            track = self.source.tracks[kind]
            self.remote_address = path.address[0]
            sink = ViewerTrackSink(
                track,
                self._payload_types[kind],
                path,
                self.source.request_keyframe,
                self._joined if kind == joined_by else None,
                self._send_failed,
            )
            self.sinks[kind] = sink
            track.add_sink(sink)
        self.connected_at = time.monotonic()
        self.source.request_keyframe()
        self._spawn(self._send_sender_reports())

    def _send_failed(self) -> None:
        # Not from inside the fan-out loop that found it: end the session just after.
        asyncio.get_running_loop().call_soon(self.end, "send_failed")

    def _joined(self) -> None:
        """The first keyframe went out: the viewer sees the picture from now on."""
        if self._on_joined is not None:
            self._on_joined(self)

    async def _send_sender_reports(self) -> None:
        """RTCP SR for each track, so that the player can line audio and video up."""
        cname = f"meridian-{self.source.studio_id}".encode()
        descriptions = {
            kind: source_description(s.track.ssrc, cname) for kind, s in self.sinks.items()
        }
        while True:
            await asyncio.sleep(0.5 + random.random())  # RFC 3550's randomised interval
            for kind, sink in self.sinks.items():
                packets, octets, _ = sink.track.sent_to(sink)
                if not packets:
                    continue
                ntp, rtp_timestamp = sink.track.timing_for_report()
                report = sender_report(sink.track.ssrc, ntp, rtp_timestamp, packets, octets)
                try:
                    sink.send_raw_rtcp(report + descriptions[kind])
                except Exception:
                    log.debug("sender report to a viewer failed", exc_info=True)

    def _rtcp_handler(self, kind: str) -> rtc_internals.RtcpHandler:
        async def handle(packet: Any) -> None:
            sink = self.sinks.get(kind)
            if sink is None:
                return
            if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                self.nacks_received += 1
                self.source.viewer_nacks += 1
                self.retransmitted += sink.retransmit(packet.lost)
            elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (
                RTCP_PSFB_PLI,
                RTCP_PSFB_FIR,
            ):
                self.keyframe_requests_received += 1
                self.source.request_keyframe()

        return handle
