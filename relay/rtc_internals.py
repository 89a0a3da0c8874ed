"""Every use of aiortc's and aioice's private internals, in one place.

aiortc negotiates (SDP, ICE, DTLS) and Meridian keeps it for that, but aiortc would
decode every received track and encode again for every sender. The relay instead
takes the studio's decrypted RTP where aiortc's receiver would hand it to its jitter
buffer, and sends each viewer's RTP straight through that viewer's SRTP session and
ICE pair. Those hooks reach into private attributes, so aiortc and aioice are pinned
exactly and `check_internals()` fails loudly (at start-up and in the tests) if an
upgrade moves any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import aioice.ice
import aioice.stun
import aiortc
import aiortc.codecs
import pylibsrtp
from aiortc import (
    RTCCertificate,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtcpFeedback
from aiortc.rtp import RtcpPacket, RtcpSrPacket, RtpPacket
from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

AIORTC_VERSION = "1.16.0"
AIOICE_VERSION = "0.13.0"
PYLIBSRTP_VERSION = "1.0.0"

# H.264 profiles the relay accepts beyond aiortc's two baseline ones: Meridian never
# decodes, so any profile a studio encodes can be forwarded to viewers that take it.
FORWARDED_H264_PROFILES = ("4d001f", "640c1f")

RtcpHandler = Callable[[Any], Awaitable[None]]

# Media received within this many seconds counts as the peer's consent to receive.
CONSENT_GRACE_SECONDS = 10.0


class InternalsMoved(RuntimeError):
    """aiortc or aioice no longer has an internal the relay depends on."""


def check_internals() -> None:
    """Raise InternalsMoved unless every private name used below is where it was."""
    problems: list[str] = []
    if aiortc.__version__ != AIORTC_VERSION:
        problems.append(f"aiortc is {aiortc.__version__}, the relay is built on {AIORTC_VERSION}")
    if pylibsrtp.__version__ != PYLIBSRTP_VERSION:
        problems.append(
            f"pylibsrtp is {pylibsrtp.__version__}, the relay is built on {PYLIBSRTP_VERSION}"
        )
    if aioice.__version__ != AIOICE_VERSION:
        problems.append(f"aioice is {aioice.__version__}, the relay is built on {AIOICE_VERSION}")
    expected: list[tuple[object, str]] = [
        (RTCRtpReceiver, "_handle_rtp_packet"),
        (RTCRtpReceiver, "_handle_rtcp_packet"),
        (RTCRtpReceiver, "_send_rtcp_pli"),
        (RTCRtpReceiver, "_send_rtcp_nack"),
        (RTCRtpSender, "_handle_rtcp_packet"),
        (RTCRtpSender, "_run_rtcp"),
        (RTCDtlsTransport, "_send_rtp"),
        (aioice.ice.Connection, "query_consent"),
        (RTCCertificate, "_create_ssl_context"),
        (aioice.ice.Connection, "build_request"),
        (aioice.ice.Connection, "request_received"),
        (aioice.ice.Connection, "respond_error"),
        (aiortc.codecs, "CODECS"),
    ]
    problems += [f"{owner!r} has no {name}" for owner, name in expected if not hasattr(owner, name)]
    instance_attributes: list[tuple[type, tuple[str, ...]]] = [
        (
            RTCRtpReceiver,
            (
                "_RTCRtpReceiver__jitter_buffer",
                "_RTCRtpReceiver__codecs",
                "_RTCRtpReceiver__remote_streams",
                "_RTCRtpReceiver__remote_bitrate_estimator",
            ),
        ),
        (RTCRtpSender, ("_ssrc", "_RTCRtpSender__rtcp_started", "_RTCRtpSender__rtcp_exited")),
        (RTCRtpTransceiver, ("_codecs",)),
        (RTCDtlsTransport, ("_tx_srtp", "_transport")),
        (aioice.ice.Connection, ("_nominated", "_query_consent_task", "remote_password")),
        (RTCPeerConnection, ("_RTCPeerConnection__certificates",)),
        (pylibsrtp.Session, ("_srtp", "_cdata", "_buffer")),
    ]
    for cls, names in instance_attributes:
        assigned = vars(cls)["__init__"].__code__.co_names
        problems += [
            f"{cls.__name__} no longer sets {name}" for name in names if name not in assigned
        ]
    if problems:
        raise InternalsMoved("; ".join(problems))


def register_forwarded_codecs() -> None:
    """Let aiortc negotiate the H.264 profiles it cannot decode but Meridian forwards."""
    video = aiortc.codecs.CODECS["video"]
    known = {str(c.parameters.get("profile-level-id")) for c in video if c.name == "H264"}
    payload_type = max(c.payloadType or 0 for c in video) + 1
    for profile in FORWARDED_H264_PROFILES:
        if profile in known:
            continue
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=90000,
                payloadType=payload_type,
                rtcpFeedback=[
                    RTCRtcpFeedback(type="nack"),
                    RTCRtcpFeedback(type="nack", parameter="pli"),
                    RTCRtcpFeedback(type="goog-remb"),
                ],
                parameters={
                    "level-asymmetry-allowed": "1",
                    "packetization-mode": "1",
                    "profile-level-id": profile,
                },
            )
        )
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/rtx",
                clockRate=90000,
                payloadType=payload_type + 1,
                parameters={"apt": payload_type},
            )
        )
        payload_type += 2


def transceiver_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs negotiated on an m-line, in the order the answer lists them."""
    codecs: list[RTCRtpCodecParameters] = transceiver._codecs
    return codecs


def set_transceiver_codecs(
    transceiver: RTCRtpTransceiver, codecs: list[RTCRtpCodecParameters]
) -> None:
    """Narrow an m-line's codecs after the offer is applied, before the answer is made.

    `setCodecPreferences` cannot do it for an answerer: aiortc creates the
    transceiver and filters its codecs in one step, inside setRemoteDescription.
    """
    transceiver._codecs = codecs


class SharedCertificate:
    """One DTLS certificate for every peer connection, renewed daily.

    aiortc generates a key pair and a certificate for each peer connection; sharing
    one removes that from every join (a burst of viewers joining is then cheaper) and
    from every session's memory. Peers check the fingerprint of each session's SDP,
    which stays right.
    """

    RENEW_AFTER_SECONDS = 24 * 3600.0  # aiortc's certificates are valid for 30 days

    def __init__(self) -> None:
        self._certificate = self._generate()
        self._created = time.monotonic()

    def current(self) -> RTCCertificate:
        if time.monotonic() - self._created > self.RENEW_AFTER_SECONDS:
            self._certificate = self._generate()
            self._created = time.monotonic()
        return self._certificate

    @staticmethod
    def _generate() -> RTCCertificate:
        """A certificate whose OpenSSL context is built once, not once per session."""
        certificate = RTCCertificate.generateCertificate()
        create_context = certificate._create_ssl_context
        contexts: dict[tuple[bytes, ...], Any] = {}

        def shared_context(srtp_profiles: list[Any]) -> Any:
            key = tuple(profile.openssl_profile for profile in srtp_profiles)
            if key not in contexts:
                contexts[key] = create_context(srtp_profiles=srtp_profiles)
            return contexts[key]

        certificate._create_ssl_context = shared_context  # type: ignore[method-assign]
        return certificate

    def apply(self, pc: RTCPeerConnection) -> None:
        """Make a new peer connection use the shared certificate (before any negotiation)."""
        pc._RTCPeerConnection__certificates = [self.current()]  # type: ignore[attr-defined]


def new_peer_connection(certificate: SharedCertificate | None) -> RTCPeerConnection:
    """A peer connection for a studio or viewer: no STUN/TURN lookups, shared certificate."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if certificate is not None:
        certificate.apply(pc)
    return pc


# ----------------------------------------------------------------------------- ingest


class _PacketTap:
    """Stands in for a receiver's jitter buffer: hands each packet on, assembles nothing.

    aiortc has by then done what a relay wants from it (SRTP, RTCP statistics for
    receiver reports and REMB, RTX unwrapping, NACKs for lost packets), and since no
    frame ever comes out of here, its decoder thread is never given anything to decode.
    """

    def __init__(self, on_packet: Callable[[RtpPacket], None]) -> None:
        self._on_packet = on_packet

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        self._on_packet(packet)
        return False, None


def tap_receiver(
    receiver: RTCRtpReceiver,
    on_packet: Callable[[RtpPacket], None],
    on_sender_report: Callable[[RtcpSrPacket], None],
) -> None:
    """Route a studio receiver's packets and sender reports to the relay."""
    receiver._RTCRtpReceiver__jitter_buffer = _PacketTap(on_packet)  # type: ignore[attr-defined]
    handle_rtcp = receiver._handle_rtcp_packet

    async def handle_rtcp_and_tap(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            on_sender_report(packet)
        await handle_rtcp(packet)

    receiver._handle_rtcp_packet = handle_rtcp_and_tap  # type: ignore[method-assign]


def receiver_codecs(receiver: RTCRtpReceiver) -> dict[int, RTCRtpCodecParameters]:
    """Payload type to codec, as negotiated for a studio's receiver."""
    codecs: dict[int, RTCRtpCodecParameters] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
    return codecs


def request_keyframe(receiver: RTCRtpReceiver, media_ssrc: int) -> Coroutine[Any, Any, None]:
    """A PLI to the studio through the receiver's own RTCP path, to be awaited or spawned."""
    return receiver._send_rtcp_pli(media_ssrc)


def receiver_packets_lost(receiver: RTCRtpReceiver) -> int:
    """Packets lost on the way in so far, from aiortc's receiver statistics (read only)."""
    streams: dict[int, Any] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    return sum(max(0, int(stream.packets_lost)) for stream in list(streams.values()))


def count_nacks_sent(receiver: RTCRtpReceiver, on_nack: Callable[[], None]) -> None:
    """Call `on_nack` for every NACK aiortc's receiver sends to the studio."""
    send_nack = receiver._send_rtcp_nack

    async def send_and_count(media_ssrc: int, lost: list[int]) -> None:
        on_nack()
        await send_nack(media_ssrc, lost)

    receiver._send_rtcp_nack = send_and_count  # type: ignore[method-assign]


@dataclass(frozen=True)
class ConsentPolicy:
    """How often to check that the peer still wants media (RFC 7675), and when to give up."""

    interval: float
    failures: int
    # Counts as consent when checks go unanswered (a peer that answers none but sends media).
    media_fresh: Callable[[], bool] | None = None


# Studios: aioice's own rhythm, and media from the studio counts as consent: some WHIP
# encoders (FFmpeg's muxer among them) never answer consent checks, and aioice would
# close their connection after half a minute although media keeps arriving.
def studio_consent(media_fresh: Callable[[], bool]) -> ConsentPolicy:
    return ConsentPolicy(aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES, media_fresh)


# Viewers: a vanished viewer is noticed within 10 s: four missed checks about 1.5 s apart
# (1.2 to 1.8 s), each given 0.5 s for its answer, end it 5.6 to 9.2 s after it vanished.
VIEWER_CONSENT = ConsentPolicy(interval=1.5, failures=4)


def supervise_consent(dtls: RTCDtlsTransport, policy: ConsentPolicy) -> None:
    """Replace aioice's consent freshness loop with one that follows `policy`."""
    connection = dtls.transport._connection

    async def query_consent() -> None:
        failures = 0
        while True:
            await asyncio.sleep(policy.interval * (0.8 + 0.4 * random.random()))
            for pair in list(connection._nominated.values()):
                request = connection.build_request(pair, nominate=False)
                try:
                    await pair.protocol.request(
                        request,
                        pair.remote_addr,
                        integrity_key=(connection.remote_password or "").encode("utf8"),
                        retransmissions=0,
                    )
                    failures = 0
                except aioice.stun.TransactionError:
                    fresh = policy.media_fresh is not None and policy.media_fresh()
                    failures = 0 if fresh else failures + 1
            if failures >= policy.failures:
                connection._query_consent_task = None
                await connection.close()
                return

    connection.query_consent = query_consent  # type: ignore[method-assign]
    reject_checks_without_priority(connection)


def reject_checks_without_priority(connection: aioice.ice.Connection) -> None:
    """Answer an ICE check that lacks PRIORITY with a STUN 400 instead of failing.

    RFC 8445 requires PRIORITY in every check, and aioice reads it unconditionally:
    a check without it (sent by some FFmpeg 8.0 builds) would raise inside the UDP
    protocol callback and close the socket. A clear error answer is what the client
    deserves, and the session goes on.
    """
    request_received = connection.request_received

    def checked(message: aioice.stun.Message, addr: tuple[str, int], protocol: Any) -> None:
        if (
            message.message_method == aioice.stun.Method.BINDING
            and message.message_class == aioice.stun.Class.REQUEST
            and "PRIORITY" not in message.attributes
        ):
            connection.respond_error(message, addr, protocol, (400, "Bad Request: no PRIORITY"))
            return
        request_received(message, addr, protocol)

    connection.request_received = checked  # type: ignore[method-assign]


# ----------------------------------------------------------------------------- egress


def drop_unused_receiver_state(receiver: RTCRtpReceiver) -> None:
    """Free what a viewer's receiver would only need to receive media, which it never does.

    aiortc gives every m-line a receiver with a bitrate estimator (about 95 KiB of
    buckets) and a jitter buffer; a viewer's m-lines are send-only, so both stay empty.
    """
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__jitter_buffer = _PacketTap(lambda packet: None)  # type: ignore[attr-defined]


def take_over_sender(sender: RTCRtpSender, ssrc: int, handle_rtcp: RtcpHandler) -> None:
    """Make an aiortc sender send nothing itself, under the relay's SSRC.

    The SSRC must be set before the answer is created (it is written into the SDP).
    aiortc's own RTCP loop would send sender reports with no timing in them, so it is
    replaced by one that only waits; the relay sends real sender reports instead.
    """
    sender._ssrc = ssrc
    sender._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign,assignment]
    started: asyncio.Event = sender._RTCRtpSender__rtcp_started  # type: ignore[attr-defined]
    exited: asyncio.Event = sender._RTCRtpSender__rtcp_exited  # type: ignore[attr-defined]

    async def idle_rtcp() -> None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        exited.set()

    sender._run_rtcp = idle_rtcp  # type: ignore[method-assign]


@dataclass(slots=True)
class MediaPath:
    """What sending one viewer's SRTP takes: its keys and its nominated ICE pair's socket,
    connected to the viewer's address.

    The socket is a duplicate of the one aioice receives on, connected once ICE has chosen
    the pair: a connected UDP socket's `send` skips the per-packet address conversion and
    route lookup of `sendto` (a fifth of the kernel's cost of a packet on the hot path),
    and the kernel now drops datagrams from any other address, which a nominated pair no
    longer takes. `close()` releases the duplicate (the session does, at its end).
    """

    protect: Callable[[bytes], bytes]
    protect_rtcp: Callable[[bytes], bytes]
    udp: socket.socket
    address: tuple[str, int]

    def close(self) -> None:
        self.udp.close()


def fast_protect(session: pylibsrtp.Session) -> Callable[[bytes], bytes]:
    """SRTP protection with the per-call overhead of pylibsrtp's wrapper taken out.

    `Session.protect` allocates a length cell, checks types and calls a helper for
    every packet; done once per viewer and packet, that wrapper costs about as much
    as the encryption. This closure keeps the same session, buffer and checks that
    matter (length, libsrtp's status) and does the rest once.
    """
    srtp = session._srtp[0]
    cdata = session._cdata
    buffer = session._buffer
    limit = len(cdata) - pylibsrtp.SRTP_MAX_TRAILER_LEN
    length = _srtp_ffi.new("int *")
    srtp_protect = _srtp_lib.srtp_protect

    def protect(packet: bytes) -> bytes:
        size = len(packet)
        if size > limit:
            raise ValueError("packet is too long")
        length[0] = size
        buffer[0:size] = packet
        status = srtp_protect(srtp, cdata, length)
        if status:
            # Naming the session here also keeps it alive as long as this closure:
            # libsrtp's state is freed with the Session object.
            raise pylibsrtp.Error(f"srtp_protect failed with status {status} in {session!r}")
        return cast(bytes, buffer[0 : length[0]])

    return protect


def media_path(dtls: RTCDtlsTransport, send_buffer_bytes: int) -> MediaPath | None:
    """The connected viewer's SRTP session and nominated pair, or None if not connected.

    The kernel's send buffer of the pair's socket is set to `send_buffer_bytes`: a send
    that finds it full (`BlockingIOError`) means the viewer cannot keep up.
    """
    srtp = dtls._tx_srtp
    pair = dtls.transport._connection._nominated.get(1)
    if srtp is None or pair is None or pair.protocol.transport is None:
        return None
    shared = pair.protocol.transport.get_extra_info("socket")
    connected = socket.socket(fileno=os.dup(shared.fileno()))
    try:
        connected.setblocking(False)
        connected.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
        connected.connect(pair.remote_addr)
    except OSError:
        connected.close()
        return None
    return MediaPath(fast_protect(srtp), srtp.protect_rtcp, connected, pair.remote_addr)


def parse_rtcp(data: bytes) -> list[Any]:
    return list(RtcpPacket.parse(data))
