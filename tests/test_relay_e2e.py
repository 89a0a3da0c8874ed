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
