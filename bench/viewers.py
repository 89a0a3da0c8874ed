"""The benchmark's viewers: `python -m bench.viewers --endpoints URL[,URL...]`.

Each viewer is a real WebRTC peer (aiortc: ICE, DTLS, SRTP keys, RTCP) with recvonly
video (H.264 offered first, as Safari does) and audio, negotiated over WHEP exactly as
any WHEP player would. What it does NOT do is decode, nor push every packet through
aiortc's receive path (a queue hop, SRTP unprotect, parse, statistics: some 20 us a
packet, which would make two load processes on one core the bottleneck long before
the relay). Instead each RTP datagram is taken off the viewer's ICE socket and
counted from its clear RTP header (payload type, sequence number, marker), and only
a sample is decrypted: every video packet until the first keyframe (the join time),
then one packet in `SAMPLE_EVERY`, each checked (authentication, header, H.264 NAL
type) to prove the stream valid. STUN, DTLS and RTCP go to aiortc as usual, and so
does any RTP that arrives before aiortc has its SRTP keys (counted the same way).
Since aiortc's receiver then sees no RTP, it would send no receiver reports: each
viewer sends its own for each stream every 0.5 to 1.5 s, as aiortc's receiver (and a
browser) does, from its counts, so the relay handles the RTCP a real audience sends.

Speaks bench.protocol: `join <count>` adds viewers and answers `joined` once each has
its first keyframe or failed, with every new viewer's join time (WHEP POST to the
first keyframe packet); `snapshot <id>` answers with every viewer's counters.
Ends on `stop`, end of input or --max-seconds, closing every session with a DELETE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp
import aioice.ice
import pylibsrtp
import uvloop
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, RtpPacket

from bench.protocol import commands, emit
from clients.webrtc_client import RemoteSession, WebRtcHttpError, end_session
from relay.codecs import h264_starts_keyframe

KINDS = ("video", "audio")
# After the first keyframe, one RTP packet in this many is decrypted and checked.
SAMPLE_EVERY = 64
# A viewer's socket buffer: a load process shares a core, and a keyframe burst to
# 100 viewers must wait in the kernel, not be lost there, while it catches up.
RECEIVE_BUFFER_BYTES = 1 << 20
# H.264 NAL unit types a relay may forward: single NAL units, STAP-A, FU-A.
_H264_NAL_TYPES = frozenset([*range(1, 24), 24, 28])
# aiortc's private attributes reached here (name-mangled where private).
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"


def _rtp_header_length(data: bytes) -> int:
    """Length of an RTP header with its CSRCs and extension (RFC 3550 5.1, 5.3.1)."""
    length = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        length += 4 + 4 * ((data[length + 2] << 8) | data[length + 3])
    return length


class Reception:
    """What one viewer received, counted per kind from the packets' clear headers.

    Loss is counted from sequence numbers (packets expected between the first and the
    highest received, minus those received), which needs no clock shared with the
    server: a packet still in flight when a snapshot is taken is not counted as lost.
    """

    __slots__ = (
        "audio_types",
        "checked",
        "dtls",
        "expected_base",
        "first_keyframe_at",
        "highest",
        "invalid",
        "keyframe",
        "last",
        "octets",
        "overhead",
        "packets",
        "ssrc",
        "video_frames",
        "video_types",
    )

    def __init__(self, video_types: frozenset[int], audio_types: frozenset[int]) -> None:
        self.video_types = video_types
        self.audio_types = audio_types
        self.dtls: RTCDtlsTransport | None = None
        # Per kind (0 video, 1 audio): received, payload octets, sequence bookkeeping.
        self.packets = [0, 0]
        self.octets = [0, 0]  # SRTP datagram bytes; payload = octets - packets * overhead
        self.overhead = [0, 0]  # header + SRTP trailer, measured on a decrypted packet
        self.last = [-1, -1]  # last sequence number seen (16 bits), -1 before any
        self.highest = [0, 0]  # extended highest sequence number
        self.expected_base = [0, 0]  # extended sequence number of the first packet
        self.ssrc = [0, 0]  # the sender's SSRC per kind, seen on a checked packet
        self.video_frames = 0  # packets with the marker bit: frames completed
        self.first_keyframe_at: float | None = None
        self.keyframe = asyncio.Event()  # set with first_keyframe_at
        self.checked = 0  # packets decrypted and checked
        self.invalid = 0  # of those, failed authentication or made no sense

    def on_datagram(self, data: bytes) -> bool:
        """Count one SRTP datagram; False when it must go to aiortc instead."""
        second = data[1]
        payload_type = second & 0x7F
        if payload_type in self.video_types:
            kind = 0
        elif payload_type in self.audio_types:
            kind = 1
        else:
            return False
        if (kind == 0 and self.first_keyframe_at is None) or not self.packets[kind] % SAMPLE_EVERY:
            dtls = self.dtls
            srtp = None if dtls is None else dtls._rx_srtp
            if srtp is None:
                return False  # keys not set yet: aiortc's path decrypts it, in order
            self._check(data, kind, srtp)
            self.ssrc[kind] = int.from_bytes(data[8:12])
        if kind == 0 and second & 0x80:
            self.video_frames += 1
        self._count(kind, (data[2] << 8) | data[3], len(data))
        return True

    def on_packet(self, packet: RtpPacket) -> None:
        """A packet that went through aiortc's receive path (decrypted, parsed)."""
        kind = 0 if packet.payload_type in self.video_types else 1
        self.ssrc[kind] = packet.ssrc
        if kind == 0:
            if packet.marker:
                self.video_frames += 1
            if self.first_keyframe_at is None and h264_starts_keyframe(packet.payload):
                self._first_keyframe()
        self._count(kind, packet.sequence_number, len(packet.payload) + self.overhead[kind])

    def _count(self, kind: int, sequence_number: int, size: int) -> None:
        self.packets[kind] += 1
        self.octets[kind] += size
        last = self.last[kind]
        if last < 0:
            self.highest[kind] = self.expected_base[kind] = sequence_number
        else:
            step = (sequence_number - last) & 0xFFFF
            if step >= 0x8000:
                return  # older than the highest: reordered or repeated
            self.highest[kind] += step
        self.last[kind] = sequence_number

    def _check(self, data: bytes, kind: int, srtp: pylibsrtp.Session) -> None:
        self.checked += 1
        try:
            rtp = srtp.unprotect(data)
        except pylibsrtp.Error:
            self.invalid += 1
            return
        header = _rtp_header_length(rtp)
        payload = rtp[header:]
        self.overhead[kind] = len(data) - len(payload)
        if rtp[:12] != data[:12] or not payload:
            self.invalid += 1
        elif kind == 0:
            if payload[0] & 0x80 or payload[0] & 0x1F not in _H264_NAL_TYPES:
                self.invalid += 1
            elif self.first_keyframe_at is None and h264_starts_keyframe(payload):
                self._first_keyframe()

    def receiver_reports(self) -> list[RtcpReceiverInfo]:
        """RTCP report blocks (RFC 3550 6.4.2) for the streams received so far."""
        reports = []
        for kind in (0, 1):
            if self.last[kind] < 0 or not self.ssrc[kind]:
                continue
            expected = self.highest[kind] - self.expected_base[kind] + 1
            reports.append(
                RtcpReceiverInfo(
                    ssrc=self.ssrc[kind],
                    fraction_lost=0,
                    packets_lost=max(0, min(expected - self.packets[kind], 0x7FFFFF)),
                    highest_sequence=self.highest[kind] & 0xFFFFFFFF,
                    jitter=0,
                    lsr=0,
                    dlsr=0,
                )
            )
        return reports

    def _first_keyframe(self) -> None:
        self.first_keyframe_at = time.monotonic()
        self.keyframe.set()

    def counts(self) -> list[int]:
        """[video packets, video payload bytes, audio packets, audio payload bytes,
        video frames, packets expected (both kinds), packets checked, invalid]."""
        expected = sum(
            self.highest[k] - self.expected_base[k] + 1 for k in (0, 1) if self.last[k] >= 0
        )
        payload = [self.octets[k] - self.packets[k] * self.overhead[k] for k in (0, 1)]
        return [
            self.packets[0],
            payload[0],
            self.packets[1],
            payload[1],
            self.video_frames,
            expected,
            self.checked,
            self.invalid,
        ]


class _CountingJitterBuffer:
    """Stands in for a receiver's jitter buffer: RTP that took aiortc's path is counted."""

    def __init__(self, reception: Reception) -> None:
        self._reception = reception

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        self._reception.on_packet(packet)
        return False, None  # no keyframe request, no frame to decode


def _take_jitter_buffer(receiver: RTCRtpReceiver, reception: Reception) -> None:
    if _JITTER_BUFFER not in vars(receiver):
        raise RuntimeError(f"aiortc's RTCRtpReceiver has no {_JITTER_BUFFER} any more")
    receiver._RTCRtpReceiver__jitter_buffer = _CountingJitterBuffer(reception)  # type: ignore[attr-defined]


def _ice_connection(transceiver: RTCRtpTransceiver) -> aioice.ice.Connection:
    connection: aioice.ice.Connection = transceiver.receiver.transport.transport._connection
    return connection


def _tap_sockets(pc: RTCPeerConnection, reception: Reception) -> int:
    """Take RTP off every ICE socket of the peer connection; returns the sockets tapped."""
    tapped = 0
    for transceiver in pc.getTransceivers():
        connection = _ice_connection(transceiver)
        protocols: list[Any] = connection._protocols
        for protocol in protocols:
            if getattr(protocol, "_bench_tapped", False):
                continue
            sock = protocol.transport.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            protocol.datagram_received = _tap(protocol.datagram_received, reception)
            protocol._bench_tapped = True
            tapped += 1
    return tapped


def _tap(
    original: Callable[[bytes, tuple[Any, ...]], None], reception: Reception
) -> Callable[[bytes, tuple[Any, ...]], None]:
    on_datagram = reception.on_datagram

    def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
        # SRTP (first byte 128..191) and not SRTCP (second byte 192..208, as aiortc).
        rtp = 127 < data[0] < 192 and len(data) > 12 and not 191 < data[1] < 209
        if not (rtp and on_datagram(data)):
            original(data, addr)

    return datagram_received


def _payload_types(answer_sdp: str) -> dict[str, frozenset[int]]:
    """Payload types per kind from the server's answer (its m-lines)."""
    types: dict[str, set[int]] = {}
    for line in answer_sdp.splitlines():
        if line.startswith("m="):
            words = line[2:].split()
            types.setdefault(words[0], set()).update(int(w) for w in words[3:] if w.isdigit())
    return {kind: frozenset(values) for kind, values in types.items()}


@dataclass
class BenchViewer:
    index: int
    endpoint: str
    pc: RTCPeerConnection
    reception: Reception | None = None
    session: RemoteSession | None = None
    posted_at: float | None = None
    connected_at: float | None = None
    error: str | None = None
    reporting: asyncio.Task[None] | None = None
    reports_sent: int = 0  # RTCP receiver reports

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    @property
    def join_seconds(self) -> float | None:
        """WHEP POST to the first keyframe packet received."""
        if self.reception is None or self.posted_at is None:
            return None
        at = self.reception.first_keyframe_at
        return None if at is None else at - self.posted_at

    @property
    def connect_seconds(self) -> float | None:
        """WHEP POST to connected (ICE and DTLS done)."""
        if self.connected_at is None or self.posted_at is None:
            return None
        return self.connected_at - self.posted_at

    @property
    def keyframe_wait_seconds(self) -> float | None:
        """Connected to the first keyframe packet: the relay's keyframe path."""
        if self.reception is None or self.connected_at is None:
            return None
        at = self.reception.first_keyframe_at
        return None if at is None else max(0.0, at - self.connected_at)

    def counts(self) -> list[int]:
        counts = self.reception.counts() if self.reception is not None else [0] * 8
        return [*counts, int(self.connected), self.reports_sent]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.viewers", description=__doc__)
    parser.add_argument(
        "--endpoints", required=True, help="WHEP URLs, comma-separated; viewer i watches i mod n"
    )
    parser.add_argument("--processes", type=int, default=1, help="load processes in all")
    parser.add_argument("--process-index", type=int, default=0, help="this one's index")
    parser.add_argument("--concurrency", type=int, default=4, help="negotiations at once")
    parser.add_argument("--connect-timeout", type=float, default=20.0)
    parser.add_argument("--keyframe-timeout", type=float, default=10.0)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="hard lifetime bound")
    return parser.parse_args(argv)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prefer_h264(transceiver: RTCRtpTransceiver) -> None:
    """Offer H.264 first (and only), so an aiortc answerer picks the studio's codec."""
    capabilities = RTCRtpReceiver.getCapabilities("video")
    assert capabilities is not None
    codecs = capabilities.codecs
    h264 = [c for c in codecs if c.mimeType.lower() == "video/h264"]
    rtx = [c for c in codecs if c.mimeType.lower() == "video/rtx"]
    transceiver.setCodecPreferences(h264 + rtx)


async def whep_post(http: aiohttp.ClientSession, viewer: BenchViewer) -> RemoteSession:
    """The offer (ICE gathered), then the POST, timed from the moment it is sent."""
    pc = viewer.pc
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    viewer.posted_at = time.monotonic()
    async with http.post(viewer.endpoint, data=pc.localDescription.sdp, headers=headers) as reply:
        body = await reply.text()
        if reply.status != 201:
            raise WebRtcHttpError(reply.status, body, dict(reply.headers))
        location = urljoin(str(reply.url), reply.headers["Location"])
        etag = reply.headers.get("ETag")
    types = _payload_types(body)
    viewer.reception = Reception(types.get("video", frozenset()), types.get("audio", frozenset()))
    for transceiver in pc.getTransceivers():
        _take_jitter_buffer(transceiver.receiver, viewer.reception)
    if not _tap_sockets(pc, viewer.reception):
        raise RuntimeError("aioice's connection has no sockets to tap")
    await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
    viewer.reception.dtls = pc.getTransceivers()[0].receiver.transport
    return RemoteSession(location, etag, body)


async def send_receiver_reports(viewer: BenchViewer) -> None:
    """One RTCP RR per stream every 0.5 to 1.5 s (RFC 3550's interval, as aiortc's)."""
    reception = viewer.reception
    assert reception is not None and reception.dtls is not None
    dtls = reception.dtls
    ssrc = random.getrandbits(32)
    while True:
        await asyncio.sleep(0.5 + random.random())
        for report in reception.receiver_reports():
            with contextlib.suppress(ConnectionError, OSError, pylibsrtp.Error):
                await dtls._send_rtp(bytes(RtcpRrPacket(ssrc=ssrc, reports=[report])))
                viewer.reports_sent += 1


async def join(http: aiohttp.ClientSession, viewer: BenchViewer, args: argparse.Namespace) -> None:
    pc = viewer.pc
    video = pc.addTransceiver("video", direction="recvonly")
    prefer_h264(video)
    pc.addTransceiver("audio", direction="recvonly")
    try:
        async with asyncio.timeout(args.connect_timeout):
            viewer.session = await whep_post(http, viewer)
            while pc.connectionState != "connected":
                if pc.connectionState in ("failed", "closed"):
                    raise ConnectionError(f"connection {pc.connectionState}")
                await asyncio.sleep(0.01)
        viewer.connected_at = time.monotonic()
        viewer.reporting = asyncio.ensure_future(send_receiver_reports(viewer))
        assert viewer.reception is not None
        async with asyncio.timeout(args.keyframe_timeout):
            await viewer.reception.keyframe.wait()
    except TimeoutError:
        if viewer.connected_at is None:
            state = pc.connectionState
            viewer.error = f"not connected within {args.connect_timeout:.0f} s ({state})"
        else:
            viewer.error = f"no keyframe within {args.keyframe_timeout:.0f} s of connecting"
    except (aiohttp.ClientError, WebRtcHttpError, ConnectionError, OSError) as exc:
        viewer.error = f"{type(exc).__name__}: {exc}"


async def leave(http: aiohttp.ClientSession, viewer: BenchViewer) -> None:
    if viewer.reporting is not None:
        viewer.reporting.cancel()
    if viewer.session is not None and viewer.connected:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            await asyncio.wait_for(end_session(http, viewer.session), 5.0)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(viewer.pc.close(), 5.0)


async def join_wave(
    http: aiohttp.ClientSession,
    viewers: list[BenchViewer],
    count: int,
    endpoints: list[str],
    args: argparse.Namespace,
) -> None:
    """Add `count` viewers (global indices continue across processes and waves)."""
    first = len(viewers)
    wave = []
    for local in range(first, first + count):
        index = local * args.processes + args.process_index
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        wave.append(BenchViewer(index, endpoints[index % len(endpoints)], pc))
    viewers.extend(wave)
    gate = asyncio.Semaphore(args.concurrency)

    async def join_gated(viewer: BenchViewer) -> None:
        async with gate:
            await join(http, viewer, args)

    started = time.monotonic()
    await asyncio.gather(*(join_gated(v) for v in wave))
    errors = [f"viewer {v.index}: {v.error}" for v in wave if v.error]
    emit(
        "joined",
        connected=sum(v.connected for v in wave),
        failed=len(errors),
        errors=errors[:5],
        wave_seconds=round(time.monotonic() - started, 3),
        join_seconds=[round(v.join_seconds, 4) for v in wave if v.join_seconds is not None],
        connect_seconds=[
            round(v.connect_seconds, 4) for v in wave if v.connect_seconds is not None
        ],
        keyframe_wait_seconds=[
            round(v.keyframe_wait_seconds, 4) for v in wave if v.keyframe_wait_seconds is not None
        ],
    )


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.max_seconds
    endpoints = [e for e in args.endpoints.split(",") if e]
    viewers: list[BenchViewer] = []
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            emit("ready")
            async for words in commands(deadline):
                if words[0] == "join":
                    await join_wave(http, viewers, int(words[1]), endpoints, args)
                elif words[0] == "snapshot":
                    emit(
                        "snapshot",
                        id=" ".join(words[1:]),
                        t=time.monotonic(),
                        cpu_seconds=cpu_seconds(),
                        viewers=[v.counts() for v in viewers],
                    )
            emit("final", cpu_seconds=cpu_seconds(), viewers=[v.counts() for v in viewers])
            return 0
        finally:
            await asyncio.gather(*(leave(http, v) for v in viewers), return_exceptions=True)


def main(argv: list[str]) -> int:
    return uvloop.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
