"""The forwarding core, fed packets directly: no sockets, no peer connections."""

from __future__ import annotations

import asyncio
import struct
from socket import socket as UdpSocket
from typing import cast

from aiortc.rtp import RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket

from relay.codecs import RelayCodec, h264_starts_keyframe, vp8_starts_keyframe
from relay.packet_cache import CachedPacket, PacketCache
from relay.rtc_internals import MediaPath
from relay.rtcp import sender_report, source_description
from relay.source import Source
from relay.track import OutputTrack
from relay.viewer import ViewerTrackSink

H264 = RelayCodec(
    "video/H264", 90000, None, {"packetization-mode": "1", "profile-level-id": "42e01f"}
)
VP8 = RelayCodec("video/VP8", 90000)
SPS = bytes([0x67, 0x42, 0xE0, 0x1F])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])


class FakeSocket:
    """A viewer's connected UDP socket; `full` is its kernel send buffer filled up."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.full = False

    def send(self, data: bytes, /) -> int:
        if self.full:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        self.sent.append(data)
        return len(data)

    def close(self) -> None: ...


def plain_path(socket: FakeSocket) -> MediaPath:
    """A media path without encryption, so the test reads what the viewer would decrypt."""
    return MediaPath(bytes, bytes, cast(UdpSocket, socket), ("192.0.2.10", 5000))


def header(packet: bytes) -> tuple[int, int, int, int, int]:
    """(marker, payload type, sequence number, timestamp, ssrc) of an RTP packet."""
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", packet[:12])
    assert b0 == 0x80
    return b1 >> 7, b1 & 0x7F, seq, ts, ssrc


def stap_a(*nals: bytes) -> bytes:
    return bytes([24]) + b"".join(len(n).to_bytes(2, "big") + n for n in nals)


def test_h264_keyframe_starts() -> None:
    assert h264_starts_keyframe(SPS)
    assert h264_starts_keyframe(stap_a(SPS, PPS))
    assert h264_starts_keyframe(bytes([0x65, 0x88]))  # single IDR slice
    assert h264_starts_keyframe(bytes([0x7C, 0x85, 0x88]))  # FU-A, start bit, IDR
    assert not h264_starts_keyframe(bytes([0x7C, 0x05, 0x88]))  # FU-A continuation
    assert not h264_starts_keyframe(bytes([0x7C, 0x81, 0x9A]))  # FU-A start, non-IDR
    assert not h264_starts_keyframe(bytes([0x41, 0x9A]))  # non-IDR slice
    assert not h264_starts_keyframe(stap_a(PPS))
    assert not h264_starts_keyframe(b"")


def test_vp8_keyframe_starts() -> None:
    # S=1, PID=0, then the VP8 frame header whose bit 0 is 0 on key frames.
    assert vp8_starts_keyframe(bytes([0x10, 0x00, 0x9D, 0x01, 0x2A]))
    assert not vp8_starts_keyframe(bytes([0x10, 0x01]))  # inter frame
    assert not vp8_starts_keyframe(bytes([0x00, 0x00]))  # not the first packet of a frame
    # X=1 with a 15-bit picture id (I=1, M=1), then the key frame header.
    assert vp8_starts_keyframe(bytes([0x90, 0x80, 0x81, 0x23, 0x00]))
    assert not vp8_starts_keyframe(bytes([0x90, 0x80, 0x81, 0x23, 0x01]))
    assert not vp8_starts_keyframe(bytes([0x90]))


def test_packet_cache_returns_only_the_exact_sequence_number() -> None:
    cache = PacketCache(4)
    cache.put(CachedPacket(10, 900, 0, b"a"))
    cache.put(CachedPacket(14, 990, 1, b"b"))  # same slot as 10
    assert cache.get(10) is None
    assert cache.get(14) == CachedPacket(14, 990, 1, b"b")


async def test_viewers_start_at_a_keyframe_and_share_one_rewrite() -> None:
    track = OutputTrack("video")
    track.set_codec(H264)
    sockets = [FakeSocket(), FakeSocket()]
    sinks = [ViewerTrackSink(track, 102, plain_path(s), lambda: None) for s in sockets]
    for sink in sinks:
        track.add_sink(sink)
    track.forward(0xABC, 1000, 9000, 1, bytes([0x41, 0x9A]))  # P frame: nobody may start here
    assert not any(s.sent for s in sockets)
    track.forward(0xABC, 1001, 12000, 0, SPS)
    track.forward(0xABC, 1002, 12000, 1, bytes([0x65, 0x88]))
    for socket in sockets:
        assert len(socket.sent) == 2
        _, payload_type, seq, _, ssrc = header(socket.sent[0])
        assert (payload_type, ssrc) == (102, track.ssrc)
        assert socket.sent[0][12:] == SPS
        assert header(socket.sent[1])[2] == (seq + 1) & 0xFFFF
    assert sockets[0].sent[0] is sockets[1].sent[0]  # one header write serves every viewer


async def test_studio_reconnect_continues_sequence_and_timestamps() -> None:
    track = OutputTrack("video")
    track.set_codec(H264)
    socket = FakeSocket()
    sink = ViewerTrackSink(track, 96, plain_path(socket), lambda: None)
    track.add_sink(sink)
    for i in range(5):
        track.forward(0x1111, 60000 + i, 3000 * i, 1, SPS if i == 0 else bytes([0x41]))
    _, _, last_seq, last_ts, _ = header(socket.sent[-1])
    await asyncio.sleep(0.05)
    # The studio publishes again: new SSRC, new random sequence and timestamp origin.
    assert track.set_codec(H264)
    track.forward(0x2222, 17, 777777, 0, bytes([0x41]))  # not a keyframe: held back
    assert len(socket.sent) == 5
    track.forward(0x2222, 18, 780777, 1, SPS)
    _, _, seq, ts, ssrc = header(socket.sent[-1])
    assert ssrc == track.ssrc
    assert seq == (last_seq + 2) & 0xFFFF  # continuous: the held-back packet took last+1
    elapsed = (ts - last_ts) & 0xFFFFFFFF
    assert 0.04 * 90000 < elapsed < 2 * 90000  # about the time that really passed


async def test_nack_is_answered_from_the_cache() -> None:
    track = OutputTrack("video")
    track.set_codec(VP8)
    socket = FakeSocket()
    sink = ViewerTrackSink(track, 97, plain_path(socket), lambda: None)
    track.add_sink(sink)
    track.forward(5, 100, 0, 1, bytes([0x10, 0x00, 0x9D]))
    track.forward(5, 101, 3000, 1, bytes([0x10, 0x01, 0x11]))
    first_seq = header(socket.sent[0])[2]
    original = list(socket.sent)
    assert sink.retransmit([first_seq, first_seq + 1, first_seq + 50]) == 2
    assert socket.sent[2:] == original


async def test_slow_viewer_is_dropped_to_the_next_keyframe_without_holding_others() -> None:
    requests: list[str] = []
    track = OutputTrack("video")
    track.set_codec(H264)
    slow_socket, fast_socket = FakeSocket(), FakeSocket()
    slow = ViewerTrackSink(track, 96, plain_path(slow_socket), lambda: requests.append("kf"))
    fast = ViewerTrackSink(track, 96, plain_path(fast_socket), lambda: None)
    track.add_sink(slow)
    track.add_sink(fast)
    track.forward(1, 1, 0, 1, SPS)
    slow_socket.full = True  # the slow viewer's socket buffer fills up
    for i in range(2, 10):
        track.forward(1, i, i * 3000, 1, bytes([0x41]))
    assert len(fast_socket.sent) == 9
    # Held from the first packet its socket refused, which it lost like those after it.
    assert len(slow_socket.sent) == 1
    assert track.sent_to(slow) == (1, len(SPS), 8)
    assert requests == ["kf"]
    slow_socket.full = False
    track.forward(1, 10, 30000, 1, bytes([0x41]))  # still not a keyframe
    assert len(slow_socket.sent) == 1
    track.forward(1, 11, 33000, 1, SPS)
    assert len(slow_socket.sent) == 2
    assert track.sent_to(slow) == (2, 2 * len(SPS), 9)
    assert track.egress_totals().dropped == 9
    assert len(fast_socket.sent) == 11


class FailingSocket(FakeSocket):
    def send(self, data: bytes, /) -> int:
        raise ConnectionRefusedError(111, "Connection refused")


async def test_a_failing_sink_does_not_starve_the_others() -> None:
    track = OutputTrack("audio")
    track.set_codec(RelayCodec("audio/opus", 48000, 2))
    socket = FakeSocket()
    broken = FailingSocket()
    track.add_sink(ViewerTrackSink(track, 96, plain_path(broken), lambda: None))
    track.add_sink(ViewerTrackSink(track, 96, plain_path(socket), lambda: None))
    track.forward(9, 1, 960, 1, b"\xfc\x00")
    track.forward(9, 2, 1920, 0, b"\xfc\x01")
    assert len(socket.sent) == 2 and track.sink_errors == 1


class CountingPublisher:
    def __init__(self) -> None:
        self.requests = 0

    def request_keyframe(self) -> None:
        self.requests += 1


async def test_keyframe_requests_are_coalesced() -> None:
    source = Source("berlin", keyframe_request_interval=0.2)
    publisher = CountingPublisher()
    source.attach(publisher, {"video": H264})  # attaching asks for one keyframe
    assert publisher.requests == 1
    source.tracks["video"].forward(1, 1, 0, 1, SPS)  # which arrives at once
    for _ in range(50):  # fifty viewers join just after it
        source.request_keyframe()
    assert publisher.requests == 1
    await asyncio.sleep(0.3)
    assert publisher.requests == 2  # the fifty were answered by one deferred request
    for _ in range(50):  # fifty more join while that keyframe is on its way: they get it
        source.request_keyframe()
    await asyncio.sleep(0.3)
    assert publisher.requests == 2
    await asyncio.sleep(0.3)  # no keyframe came: the request or its answer was lost
    source.request_keyframe()
    assert publisher.requests == 3
    assert source.keyframe_requests_sent == 3
    source.close()


async def test_only_the_current_publisher_is_attached() -> None:
    source = Source("berlin")
    first, second = CountingPublisher(), CountingPublisher()
    source.attach(first, {"video": H264})
    source.attach(second, {"video": H264})
    assert source.is_current(second) and not source.is_current(first)
    assert not source.detach(first)  # a late goodbye of the replaced session changes nothing
    assert source.detach(second)
    assert source.publisher is None
    source.close()


def test_sender_report_and_cname_match_aiortc_serialisation() -> None:
    ours = sender_report(0x11223344, (3_900_000_000 << 32) | 0x8000_0000, 90000, 12, 3400)
    theirs = RtcpSrPacket(
        ssrc=0x11223344,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=(3_900_000_000 << 32) | 0x8000_0000,
            rtp_timestamp=90000,
            packet_count=12,
            octet_count=3400,
        ),
    )
    assert ours == bytes(theirs)
    for cname in (b"meridian-berlin", b"abc", b"abcd"):
        sdes = RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=7, items=[(1, cname)])])
        assert source_description(7, cname) == bytes(sdes)
