"""A studio or a viewer in a process of its own, for tests that kill it without a goodbye.

    python -m tests.rtc_child publish <whip endpoint> <token> [--colour R,G,B]
    python -m tests.rtc_child watch <whep endpoint>

It prints `ready` once media flows (a publisher: connected; a viewer: its first video frame
decoded) and then runs until it is killed. `RtcChild` starts one from a test; SIGKILL
closes its sockets with no DELETE, no RTCP BYE and no DTLS close_notify: a vanished peer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from clients.webrtc_client import negotiate
from tests.rtc_peers import ColourTrack, prefer, rtc_config

ROOT = Path(__file__).resolve().parent.parent


async def publish(endpoint: str, token: str, colour: tuple[int, int, int]) -> None:
    pc = RTCPeerConnection(rtc_config())
    pc.addTransceiver(ColourTrack(colour), direction="sendonly")
    prefer(pc, "video", "video/H264")
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected":
            connected.set()

    async with aiohttp.ClientSession() as http:
        await negotiate(http, endpoint, pc, token)
    await asyncio.wait_for(connected.wait(), 15)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def watch(endpoint: str) -> None:
    pc = RTCPeerConnection(rtc_config())
    tracks: dict[str, MediaStreamTrack] = {}

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        tracks[track.kind] = track

    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    async with aiohttp.ClientSession() as http:
        await negotiate(http, endpoint, pc)
    for _ in range(150):
        if "video" in tracks:
            break
        await asyncio.sleep(0.1)
    await asyncio.wait_for(tracks["video"].recv(), 15)
    print("ready", flush=True)
    while True:  # keep decoding, as a player does
        await tracks["video"].recv()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.rtc_child")
    parser.add_argument("role", choices=["publish", "watch"])
    parser.add_argument("endpoint")
    parser.add_argument("token", nargs="?", default="")
    parser.add_argument("--colour", default="220,40,40")
    args = parser.parse_args(argv)
    if args.role == "publish":
        r, g, b = (int(part) for part in args.colour.split(","))
        asyncio.run(publish(args.endpoint, args.token, (r, g, b)))
    else:
        asyncio.run(watch(args.endpoint))


@dataclass
class RtcChild:
    process: asyncio.subprocess.Process

    @classmethod
    async def start(cls, *args: str, within: float = 30.0) -> RtcChild:
        """Start `python -m tests.rtc_child <args>` and wait for its `ready`."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.rtc_child",
            *args,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        child = cls(process)
        assert process.stdout is not None
        output: list[bytes] = []
        try:
            async with asyncio.timeout(within):
                while True:
                    line = await process.stdout.readline()
                    if not line:
                        raise RuntimeError(f"rtc_child {args[0]} exited: {b''.join(output)!r}")
                    output.append(line)
                    if line.strip() == b"ready":
                        return child
        except BaseException:
            await child.kill()
            raise

    async def kill(self) -> None:
        """SIGKILL: its sockets close with no goodbye of any kind."""
        if self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)
        await self.process.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
