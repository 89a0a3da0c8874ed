"""The benchmark's studio: `python -m bench.publisher --endpoint URL --token-env NAME`.

Encodes the benchmark loop once (before anything is timed), reports its real
bitrate, then publishes it over WHIP by replay (no encoder runs while publishing).
Speaks bench.protocol: events `encoded`, `connected`, `stats` (on `snapshot <id>`),
`final`, `error`. Ends on `stop`, end of input, a failed connection or --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import sys
import time

import aiohttp
import uvloop
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.stats import RTCOutboundRtpStreamStats

from bench.media import encode_bench_loop, rtp_packets_per_second
from bench.protocol import commands, emit
from clients.demo_media import add_loop_tracks
from clients.webrtc_client import RemoteSession, WebRtcHttpError, end_session, negotiate


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.publisher", description=__doc__)
    parser.add_argument("--endpoint", required=True, help="WHIP URL, e.g. http://h:p/whip/x")
    parser.add_argument("--token-env", required=True, help="environment variable with the token")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", type=int, default=2_500_000, help="video bit/s")
    parser.add_argument("--loop-seconds", type=int, default=4)
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="hard lifetime bound")
    return parser.parse_args(argv)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def sent_counts(pc: RTCPeerConnection) -> dict[str, int]:
    report = await pc.getStats()
    counts = {"packets": 0, "bytes": 0}
    for stats in report.values():
        if isinstance(stats, RTCOutboundRtpStreamStats):
            counts["packets"] += stats.packetsSent
            counts["bytes"] += stats.bytesSent
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
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    add_loop_tracks(pc, media)
    lost = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            lost.set()

    session: RemoteSession | None = None
    async with aiohttp.ClientSession() as http:
        try:
            session = await negotiate(http, args.endpoint, pc, token)
            await wait_connected(pc, args.connect_timeout)
            emit("connected", at=time.monotonic())
            async for words in commands(deadline, lost):
                if words[0] == "snapshot":
                    emit(
                        "stats",
                        id=" ".join(words[1:]),
                        cpu_seconds=cpu_seconds(),
                        **await sent_counts(pc),
                    )
            if lost.is_set():
                emit("error", message=f"WHIP session {pc.connectionState} while publishing")
                return 1
            emit("final", cpu_seconds=cpu_seconds(), **await sent_counts(pc))
            return 0
        except (aiohttp.ClientError, WebRtcHttpError, ConnectionError, OSError) as exc:
            emit("error", message=f"publishing failed: {exc}")
            return 1
        finally:
            if session is not None and pc.connectionState == "connected":
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    await asyncio.wait_for(end_session(http, session, token), 5.0)
            await pc.close()


def main(argv: list[str]) -> int:
    return uvloop.run(publish(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
