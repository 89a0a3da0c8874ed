"""The benchmark's viewers: `python -m bench.viewers --count K --endpoint URL`.

Each viewer is a real WebRTC peer (aiortc: ICE, DTLS, SRTP decryption, RTCP
receiver reports and NACKs) with recvonly video and audio, negotiated over WHEP
exactly as any WHEP player would. What it does NOT do is decode: each receiver's
jitter buffer is replaced by a counter, so no frame is ever assembled or handed to
aiortc's decoder threads, and a load process can hold dozens of viewers.

Speaks bench.protocol: `joined` once every viewer connected or failed, `snapshot`
(on `snapshot <id>`) with every viewer's packet and byte counts, `final` at the end.
Ends on `stop`, end of input or --max-seconds, closing every session with a DELETE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import uvloop
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver
from aiortc.rtp import RtpPacket

from bench.protocol import commands, emit
from clients.webrtc_client import RemoteSession, WebRtcHttpError, end_session, negotiate

KINDS = ("video", "audio")
# aiortc's private attribute for a receiver's jitter buffer (name-mangled).
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"


class PacketCounter:
    """Stands in for a receiver's jitter buffer: counts packets, assembles nothing.

    aiortc calls `add()` with every decrypted RTP packet (after its RTCP statistics
    and NACK bookkeeping); `(False, None)` means "no keyframe request, no frame".
    """

    __slots__ = ("bytes", "packets")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0  # RTP payload bytes, as the server's egress byte counters

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        self.packets += 1
        self.bytes += len(packet.payload)
        return False, None


def count_instead_of_decoding(receiver: RTCRtpReceiver) -> PacketCounter:
    if _JITTER_BUFFER not in vars(receiver):
        raise RuntimeError(f"aiortc's RTCRtpReceiver has no {_JITTER_BUFFER} any more")
    counter = PacketCounter()
    receiver._RTCRtpReceiver__jitter_buffer = counter  # type: ignore[attr-defined]
    return counter


@dataclass
class BenchViewer:
    index: int
    pc: RTCPeerConnection
    counters: dict[str, PacketCounter] = field(default_factory=dict)
    session: RemoteSession | None = None
    connect_seconds: float | None = None
    error: str | None = None

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    def counts(self) -> list[int]:
        """[video packets, video bytes, audio packets, audio bytes, connected 0/1]."""
        video, audio = self.counters["video"], self.counters["audio"]
        return [video.packets, video.bytes, audio.packets, audio.bytes, int(self.connected)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.viewers", description=__doc__)
    parser.add_argument("--endpoint", required=True, help="WHEP URL, e.g. http://h:p/whep/x")
    parser.add_argument("--count", type=int, required=True, help="viewers in this process")
    parser.add_argument("--first-index", type=int, default=0, help="index of the first viewer")
    parser.add_argument("--concurrency", type=int, default=4, help="negotiations at once")
    parser.add_argument("--connect-timeout", type=float, default=20.0)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="hard lifetime bound")
    return parser.parse_args(argv)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def join(
    http: aiohttp.ClientSession, endpoint: str, viewer: BenchViewer, within: float
) -> None:
    started = time.monotonic()
    pc = viewer.pc
    for kind in KINDS:
        transceiver = pc.addTransceiver(kind, direction="recvonly")
        viewer.counters[kind] = count_instead_of_decoding(transceiver.receiver)
    try:
        async with asyncio.timeout(within):
            viewer.session = await negotiate(http, endpoint, pc)
            while pc.connectionState != "connected":
                if pc.connectionState in ("failed", "closed"):
                    raise ConnectionError(f"connection {pc.connectionState}")
                await asyncio.sleep(0.05)
        viewer.connect_seconds = time.monotonic() - started
    except TimeoutError:
        viewer.error = f"not connected within {within:.0f} s ({pc.connectionState})"
    except (aiohttp.ClientError, WebRtcHttpError, ConnectionError, OSError) as exc:
        viewer.error = f"{type(exc).__name__}: {exc}"


async def leave(http: aiohttp.ClientSession, viewer: BenchViewer) -> None:
    if viewer.session is not None and viewer.connected:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            await asyncio.wait_for(end_session(http, viewer.session), 5.0)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(viewer.pc.close(), 5.0)


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.max_seconds
    viewers = [
        BenchViewer(args.first_index + i, RTCPeerConnection(RTCConfiguration(iceServers=[])))
        for i in range(args.count)
    ]
    gate = asyncio.Semaphore(args.concurrency)

    async def join_gated(http: aiohttp.ClientSession, viewer: BenchViewer) -> None:
        async with gate:
            await join(http, args.endpoint, viewer, args.connect_timeout)

    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            started = time.monotonic()
            await asyncio.gather(*(join_gated(http, v) for v in viewers))
            errors = [f"viewer {v.index}: {v.error}" for v in viewers if v.error]
            times = sorted(v.connect_seconds for v in viewers if v.connect_seconds is not None)
            emit(
                "joined",
                connected=sum(v.connected for v in viewers),
                failed=len(errors),
                errors=errors[:5],
                join_seconds=round(time.monotonic() - started, 3),
                connect_seconds_median=round(times[len(times) // 2], 3) if times else None,
                connect_seconds_max=round(times[-1], 3) if times else None,
            )
            async for words in commands(deadline):
                if words[0] == "snapshot":
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
