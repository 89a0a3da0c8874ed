"""FFmpeg's WHIP muxer as a studio: a real third-party publisher for the interop tests.

imageio-ffmpeg (a development requirement) ships an FFmpeg build with the `whip`
muxer. It publishes a lavfi test pattern (H.264 baseline) and a sine tone (Opus) over
real UDP. Every process started here is killed when its context exits, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import imageio_ffmpeg
from aiohttp import web
from aiohttp.test_utils import TestServer

WIDTH, HEIGHT = 640, 360
EXIT_WAIT_SECONDS = 10.0


def ffmpeg_exe() -> str:
    path: str = imageio_ffmpeg.get_ffmpeg_exe()
    return path


def whip_command(
    endpoint: str, token: str | None, *, seconds: float, size: tuple[int, int] = (WIDTH, HEIGHT)
) -> list[str]:
    """Publish a test pattern and a tone for `seconds` (FFmpeg stops by itself after that)."""
    width, height = size
    command = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "info",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={width}x{height}:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        f"{seconds:g}",
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-tune",
        "zerolatency",
        "-preset",
        "ultrafast",
        "-g",
        "30",
        "-bf",
        "0",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "libopus",
        "-ar",
        "48000",
        "-ac",
        "2",
        "-f",
        "whip",
    ]
    if token is not None:
        command += ["-authorization", token]
    return [*command, endpoint]


@dataclass
class FFmpegStudio:
    """A running FFmpeg publisher; its log is kept so that failures can show it."""

    process: asyncio.subprocess.Process
    log: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    _reader: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(list(self.log)[-lines:])

    async def _read_log(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        while line := await stream.readline():
            self.log.append(line.decode(errors="replace").rstrip())

    async def wait(self, within: float = EXIT_WAIT_SECONDS) -> int:
        """Wait (bounded) for FFmpeg to exit by itself; its exit status."""
        return await asyncio.wait_for(self.process.wait(), within)

    async def quit(self, within: float = EXIT_WAIT_SECONDS) -> int:
        """Press 'q', as a person at FFmpeg's console would: it ends the output cleanly."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(b"q")
        with contextlib.suppress(ConnectionError):
            await stdin.drain()
        return await self.wait(within)

    async def terminate(self, within: float = EXIT_WAIT_SECONDS) -> int:
        """SIGTERM, as a service manager stops FFmpeg: it too ends the output cleanly."""
        self.process.send_signal(signal.SIGTERM)
        return await self.wait(within)

    async def kill(self) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), EXIT_WAIT_SECONDS)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):  # wait_for has then cancelled it
                await asyncio.wait_for(self._reader, EXIT_WAIT_SECONDS)


@asynccontextmanager
async def ffmpeg_publishing(
    endpoint: str, token: str | None, *, seconds: float
) -> AsyncIterator[FFmpegStudio]:
    """FFmpeg publishing to a WHIP endpoint; killed on exit if still running."""
    process = await asyncio.create_subprocess_exec(
        *whip_command(endpoint, token, seconds=seconds),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    studio = FFmpegStudio(process)
    try:
        studio._reader = asyncio.ensure_future(studio._read_log())
        yield studio
    finally:
        await studio.kill()


async def capture_ffmpeg_offer(within: float = 10.0) -> str:
    """The SDP offer FFmpeg's WHIP muxer really sends, taken by an endpoint that refuses it."""
    offers: asyncio.Queue[str] = asyncio.Queue()

    async def take(request: web.Request) -> web.Response:
        offers.put_nowait(await request.text())
        return web.Response(status=503, text="offer captured")

    app = web.Application()
    app.router.add_post("/whip/capture", take)
    capture = TestServer(app, host="127.0.0.1")
    await capture.start_server()
    try:
        endpoint = str(capture.make_url("/whip/capture"))
        async with ffmpeg_publishing(endpoint, "capture-token", seconds=5) as studio:
            try:
                return await asyncio.wait_for(offers.get(), within)
            except TimeoutError:
                raise AssertionError(f"FFmpeg sent no offer:\n{studio.log_tail()}") from None
    finally:
        await capture.close()
