"""Studios publish over WHIP and viewers watch over WHEP, with real aiortc peers over UDP."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import TOKENS, url
from tests.rtc_peers import close_to, mean_colour, publishing, watching


async def wait_live(http: aiohttp.ClientSession, server: TestServer, studio: str) -> None:
    for _ in range(100):
        async with http.get(url(server, "/api/studios")) as response:
            listing = (await response.json())["studios"]
        if next(s for s in listing if s["id"] == studio)["live"]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"studio {studio} never went live")


@pytest.mark.parametrize("codec", ["video/H264", "video/VP8"])
async def test_viewers_decode_the_studio_picture(
    server: TestServer, http: aiohttp.ClientSession, codec: str
) -> None:
    colour = (40, 200, 60)
    async with publishing(
        http, url(server, "/whip/berlin"), TOKENS["berlin"], video=codec, colour=colour
    ):
        await wait_live(http, server, "berlin")
        async with (
            watching(http, url(server, "/whep/berlin")) as first,
            watching(http, url(server, "/whep/berlin")) as second,
        ):
            for viewer in (first, second):
                frames = await viewer.frames(10)
                assert close_to(mean_colour(frames[-1]), colour), mean_colour(frames[-1])
                assert (frames[-1].width, frames[-1].height) == (320, 240)
                assert await viewer.audio_frames(5) == 5


async def test_viewers_get_sender_reports_for_audio_and_video(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    async with publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"]):
        await wait_live(http, server, "berlin")
        async with watching(http, url(server, "/whep/berlin")) as viewer:
            await viewer.frames(5)
            reported: set[str] = set()
            for _ in range(40):  # sender reports come every 0.5 to 1.5 s
                stats = await viewer.pc.getStats()
                reported = {s.kind for s in stats.values() if s.type == "remote-outbound-rtp"}
                if reported == {"audio", "video"}:
                    break
                await asyncio.sleep(0.1)
            assert reported == {"audio", "video"}


@pytest.mark.parametrize(("video", "audio"), [("video/VP8", False), (None, True)])
async def test_video_only_and_audio_only_studios(
    server: TestServer, http: aiohttp.ClientSession, video: str | None, audio: bool
) -> None:
    async with publishing(
        http, url(server, "/whip/cairo"), TOKENS["cairo"], video=video, audio=audio
    ):
        await wait_live(http, server, "cairo")
        async with http.get(url(server, "/api/studios")) as response:
            cairo = next(s for s in (await response.json())["studios"] if s["id"] == "cairo")
        assert set(cairo["codecs"]) == ({"video"} if video else {"audio"})
        # A viewer asking for both gets what the studio sends.
        async with watching(http, url(server, "/whep/cairo")) as viewer:
            if video:
                assert len(await viewer.frames(5)) == 5
            else:
                assert await viewer.audio_frames(10) == 10
            assert set(viewer.tracks) == set(cairo["codecs"])
