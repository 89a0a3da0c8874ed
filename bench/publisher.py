"""The benchmark's studios: `python -m bench.publisher --endpoints URL[,URL...] --token-env NAME`.

Encodes the benchmark loop once (before anything is timed), reports its real
bitrate, then publishes it over WHIP to every endpoint (one peer connection per
studio, all replaying the same encoded loop; no encoder runs while publishing).

Like a real encoder, each studio answers a keyframe request (RTCP PLI or FIR from the
relay) with a keyframe on its next frame: the replay jumps back to the start of the
current group of pictures, whose IDR the loop holds pre-encoded, and goes on from
there with its timestamps unbroken. Every request that reaches a studio is counted
(the sender's RTCP handler is wrapped), which is how the benchmark knows how many
keyframe requests a joining viewer costs the studio.

Each studio paces its packets as libwebrtc's pacer does (browsers publish through it):
every packet, audio and video, leaves at `--pacing-factor` times the video bitrate, so a
keyframe's packets spread over tens of milliseconds rather than leaving back to back; its
abs-send-time is stamped when it really leaves. `--pacing-factor 0` sends each frame's
packets at once, as aiortc, FFmpeg and GStreamer do.

Speaks bench.protocol: events `encoded`, `connected`, `stats` (on `snapshot <id>`),
`final`, `error`. Ends on `stop`, end of input, a failed connection or --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import resource
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import aiohttp
import uvloop
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, clock
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket
from aiortc.stats import RTCOutboundRtpStreamStats
from av.packet import Packet
from av.stream import Stream

from bench.media import encode_bench_loop, rtp_packets_per_second
from bench.protocol import commands, emit
from clients.demo_media import (
    VIDEO_CLOCK_RATE,
    EncodedLoop,
    LoopAudioTrack,
    prefer_codec,
)
from clients.webrtc_client import RemoteSession, WebRtcHttpError, end_session, negotiate

# How far the replay may fall behind real time (a stall) before it re-anchors.
_MAX_LAG = 0.5
# A pacer sleeps only when it is at least this far ahead (timers are not finer).
_PACING_SLACK = 0.001
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def restamp_abs_send_time(packet: bytes, extension_id: int) -> bytes:
    """The plain RTP packet with its abs-send-time (one-byte header extension) set to now."""
    if not packet[0] & 0x10:
        return packet
    offset = 12 + 4 * (packet[0] & 0x0F)
    profile, words = struct.unpack_from("!HH", packet, offset)
    if profile != 0xBEDE:
        return packet
    position, end = offset + 4, offset + 4 + 4 * words
    while position < end:
        element = packet[position]
        if element == 0:  # padding
            position += 1
            continue
        element_id, length = element >> 4, (element & 0x0F) + 1
        if element_id == 15:
            break
        if element_id == extension_id and length == 3:
            stamp = (clock.current_ntp_time() >> 14) & 0xFFFFFF
            return packet[: position + 1] + stamp.to_bytes(3, "big") + packet[position + 4 :]
        position += 1 + length
    return packet


class Pacer:
    """Sends one transport's RTP at `rate` bit/s at most, as libwebrtc's pacer does."""

    def __init__(
        self, send: Callable[[bytes], Awaitable[None]], rate: float, extension_id: int
    ) -> None:
        self._send = send
        self._rate = rate
        self._extension_id = extension_id
        self._next_slot = 0.0

    async def send(self, data: bytes) -> None:
        now = time.monotonic()
        if self._next_slot - now > _PACING_SLACK:
            await asyncio.sleep(self._next_slot - now)
            now = time.monotonic()
            data = restamp_abs_send_time(data, self._extension_id)
        self._next_slot = max(self._next_slot, now) + len(data) * 8 / self._rate
        await self._send(data)


def pace(pc: RTCPeerConnection, rate: float) -> None:
    """Pace the negotiated connection's RTP at `rate` bit/s."""
    found = re.search(
        rf"^a=extmap:(\d+)\S* {re.escape(ABS_SEND_TIME)}", pc.localDescription.sdp, re.M
    )
    extension_id = int(found[1]) if found else 0
    transports = {id(t.sender.transport): t.sender.transport for t in pc.getTransceivers()}
    for transport in transports.values():  # one with BUNDLE
        transport._send_rtp = Pacer(transport._send_rtp, rate, extension_id).send  # type: ignore[method-assign]


class ReplayVideoTrack(MediaStreamTrack):
    """The loop's pre-encoded video in real time, with a keyframe on request."""

    kind = "video"

    def __init__(self, loop: EncodedLoop) -> None:
        super().__init__()
        self._chunks = loop.video
        self._step = VIDEO_CLOCK_RATE // loop.fps
        self._time_base = Fraction(1, VIDEO_CLOCK_RATE)
        self._frames = 0  # frames sent: the timeline
        self._position = 0  # which loop frame comes next: the content
        self._start: float | None = None
        self._keyframe_requested = False
        self.keyframes_forced = 0

    def request_keyframe(self) -> None:
        self._keyframe_requested = True

    async def recv(self) -> Packet[Stream]:
        if self.readyState != "live":
            raise MediaStreamError
        pts = self._frames * self._step
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            wait = self._start + pts / VIDEO_CLOCK_RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
                if self.readyState != "live":
                    raise MediaStreamError
            elif -wait > _MAX_LAG:
                self._start -= wait
        if self._keyframe_requested:
            self._keyframe_requested = False
            if not self._chunks[self._position].keyframe:
                # Back to this group's IDR: from there the stream is decodable again.
                while not self._chunks[self._position].keyframe:
                    self._position -= 1
                self.keyframes_forced += 1
        chunk = self._chunks[self._position]
        self._position = (self._position + 1) % len(self._chunks)
        self._frames += 1
        return chunk.packet(pts, self._time_base)


@dataclass
class Studio:
    endpoint: str
    pc: RTCPeerConnection
    video: ReplayVideoTrack
    session: RemoteSession | None = None
    keyframe_requests: int = 0  # PLI and FIR that reached this studio


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.publisher", description=__doc__)
    parser.add_argument("--endpoints", required=True, help="WHIP URLs, comma-separated")
    parser.add_argument("--token-env", required=True, help="environment variable with the token")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", type=int, default=2_500_000, help="video bit/s")
    parser.add_argument(
        "--pacing-factor",
        type=float,
        default=2.5,
        help="send at most this times the video bitrate (libwebrtc's 2.5); 0: unpaced",
    )
    parser.add_argument("--loop-seconds", type=int, default=4)
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="hard lifetime bound")
    return parser.parse_args(argv)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def count_keyframe_requests(studio: Studio, sender: RTCRtpSender) -> None:
    """Count the PLI/FIR reaching this sender and answer them with a keyframe."""
    handle = sender._handle_rtcp_packet

    async def handle_and_count(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            studio.keyframe_requests += 1
            studio.video.request_keyframe()
        await handle(packet)

    sender._handle_rtcp_packet = handle_and_count  # type: ignore[method-assign]


def add_studio(endpoint: str, media: EncodedLoop) -> Studio:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = ReplayVideoTrack(media)
    studio = Studio(endpoint, pc, video)
    video_transceiver = pc.addTransceiver(video, direction="sendonly")
    prefer_codec(video_transceiver, media.mime_type)
    audio_transceiver = pc.addTransceiver(LoopAudioTrack(media), direction="sendonly")
    prefer_codec(audio_transceiver, "audio/opus")
    count_keyframe_requests(studio, video_transceiver.sender)
    return studio


async def sent_counts(studios: list[Studio]) -> dict[str, int]:
    counts = {"packets": 0, "bytes": 0}
    for studio in studios:
        report = await studio.pc.getStats()
        for stats in report.values():
            if isinstance(stats, RTCOutboundRtpStreamStats):
                counts["packets"] += stats.packetsSent
                counts["bytes"] += stats.bytesSent
    counts["keyframe_requests"] = sum(s.keyframe_requests for s in studios)
    counts["keyframes_forced"] = sum(s.video.keyframes_forced for s in studios)
    return counts


async def wait_connected(pc: RTCPeerConnection, within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or loop.time() > deadline:
            raise ConnectionError(f"WHIP session {pc.connectionState} after {within:.0f} s")
        await asyncio.sleep(0.05)


async def publish(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.max_seconds
    token = os.environ[args.token_env]
    media, stats = encode_bench_loop(
        args.width, args.height, args.fps, args.loop_seconds, args.bitrate
    )
    emit(
        "encoded",
        width=media.width,
        height=media.height,
        fps=media.fps,
        loop_seconds=media.seconds,
        encode_seconds=round(media.encode_seconds, 3),
        video_bitrate=round(stats.bitrate),
        audio_bitrate=round(media.audio_bitrate),
        keyframe_bytes=round(stats.keyframe_bytes),
        delta_frame_bytes=round(stats.delta_frame_bytes),
        encoder_passes=stats.passes,
        encoder_bitrate=stats.encoder_bitrate,
        rtp_packets_per_second_estimate=round(rtp_packets_per_second(media), 1),
    )
    studios = [add_studio(endpoint, media) for endpoint in args.endpoints.split(",") if endpoint]
    lost = asyncio.Event()
    for studio in studios:
        pc = studio.pc

        def on_state(pc: RTCPeerConnection = pc) -> None:
            if pc.connectionState in ("failed", "closed"):
                lost.set()

        pc.on("connectionstatechange", on_state)

    async with aiohttp.ClientSession() as http:
        try:
            for studio in studios:
                studio.session = await negotiate(http, studio.endpoint, studio.pc, token)
                if args.pacing_factor > 0:
                    pace(studio.pc, args.pacing_factor * stats.bitrate)
            for studio in studios:
                await wait_connected(studio.pc, args.connect_timeout)
            emit("connected", at=time.monotonic(), studios=len(studios))
            async for words in commands(deadline, lost):
                if words[0] == "snapshot":
                    emit(
                        "stats",
                        id=" ".join(words[1:]),
                        cpu_seconds=cpu_seconds(),
                        **await sent_counts(studios),
                    )
            if lost.is_set():
                states = ", ".join(f"{s.endpoint}: {s.pc.connectionState}" for s in studios)
                emit("error", message=f"a WHIP session ended while publishing ({states})")
                return 1
            emit("final", cpu_seconds=cpu_seconds(), **await sent_counts(studios))
            return 0
        except (aiohttp.ClientError, WebRtcHttpError, ConnectionError, OSError) as exc:
            emit("error", message=f"publishing failed: {exc}")
            return 1
        finally:
            for studio in studios:
                if studio.session is not None and studio.pc.connectionState == "connected":
                    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                        await asyncio.wait_for(end_session(http, studio.session, token), 5.0)
            await asyncio.gather(*(s.pc.close() for s in studios), return_exceptions=True)


def main(argv: list[str]) -> int:
    # aioice says why a session ends (consent expiry) at INFO: worth a line in the log.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("aioice.ice").setLevel(logging.INFO)
    return uvloop.run(publish(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
