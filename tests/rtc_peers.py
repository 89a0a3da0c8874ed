"""Real WebRTC peers for the tests: an aiortc studio that draws a checkable picture, and viewers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack
from av import VideoFrame

from clients.webrtc_client import RemoteSession, end_session, negotiate

WIDTH, HEIGHT = 320, 240


def colour_for(index: int) -> tuple[int, int, int]:
    """The studio's colour for a stream index: viewers check they get the right studio."""
    return [(220, 40, 40), (40, 200, 60), (50, 70, 220), (230, 200, 30)][index % 4]


class ColourTrack(VideoStreamTrack):
    """A solid colour with a moving bar, so every frame differs and the colour is checkable."""

    def __init__(self, colour: tuple[int, int, int]) -> None:
        super().__init__()
        self.colour = colour
        self.frames = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        image[:] = self.colour
        x = (self.frames * 4) % (WIDTH - 16)
        image[HEIGHT - 16 :, x : x + 16] = 255
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.frames += 1
        return frame


def rtc_config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[])


def prefer(pc: RTCPeerConnection, kind: str, mime_type: str) -> None:
    for transceiver in pc.getTransceivers():
        if transceiver.kind == kind:
            codecs = [
                c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType == mime_type
            ]
            transceiver.setCodecPreferences(codecs)


@dataclass
class Studio:
    pc: RTCPeerConnection
    session: RemoteSession
    video: ColourTrack | None


@asynccontextmanager
async def publishing(
    http: aiohttp.ClientSession,
    endpoint: str,
    token: str,
    *,
    video: str | None = "video/H264",
    audio: bool = True,
    colour: tuple[int, int, int] = (220, 40, 40),
) -> AsyncIterator[Studio]:
    pc = RTCPeerConnection(rtc_config())
    track = None
    if video:
        track = ColourTrack(colour)
        pc.addTransceiver(track, direction="sendonly")
        prefer(pc, "video", video)
    if audio:
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    try:
        session = await negotiate(http, endpoint, pc, token)
        yield Studio(pc, session, track)
    finally:
        await pc.close()


@dataclass
class Viewer:
    pc: RTCPeerConnection
    session: RemoteSession | None = None
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)

    async def frames(self, count: int, within: float = 15.0) -> list[VideoFrame]:
        """Decode `count` video frames (bounded wait)."""
        track = self.tracks["video"]
        frames: list[VideoFrame] = []

        async def collect() -> None:
            while len(frames) < count:
                frame = await track.recv()
                assert isinstance(frame, VideoFrame)
                frames.append(frame)

        await asyncio.wait_for(collect(), within)
        return frames

    async def audio_frames(self, count: int, within: float = 15.0) -> int:
        track = self.tracks["audio"]

        async def collect() -> None:
            for _ in range(count):
                await track.recv()

        await asyncio.wait_for(collect(), within)
        return count


@asynccontextmanager
async def watching(
    http: aiohttp.ClientSession,
    endpoint: str,
    kinds: tuple[str, ...] = ("video", "audio"),
    token: str | None = None,
) -> AsyncIterator[Viewer]:
    """A viewer of `endpoint` (with a viewer token for a private studio), ended at exit."""
    pc = RTCPeerConnection(rtc_config())
    viewer = Viewer(pc)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        viewer.tracks[track.kind] = track

    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    try:
        viewer.session = await negotiate(http, endpoint, pc, token)
        yield viewer
    finally:
        if viewer.session is not None and pc.connectionState != "closed":
            await end_session(http, viewer.session)
        await pc.close()


def mean_colour(frame: VideoFrame) -> tuple[int, int, int]:
    """Average colour of the upper part of a frame (above the moving bar)."""
    image = frame.to_ndarray(format="rgb24")
    top = image[: image.shape[0] * 2 // 3]
    r, g, b = (int(v) for v in top.reshape(-1, 3).mean(axis=0))
    return r, g, b


def close_to(a: tuple[int, int, int], b: tuple[int, int, int], tolerance: int = 30) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))
