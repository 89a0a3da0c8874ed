"""Viewers join and leave, the studio drops and returns: sessions survive, gauges stay exact."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import aiohttp
from aiohttp.test_utils import TestServer

from clients.webrtc_client import end_session
from tests.conftest import TOKENS, url
from tests.metrics_probe import scrape, wait_for_viewers
from tests.rtc_peers import Viewer, close_to, mean_colour, publishing, watching
from tests.test_relay_e2e import wait_live

RED, BLUE = (220, 40, 40), (50, 70, 220)


async def first_frame_of(viewer: Viewer, colour: tuple[int, int, int], within: float) -> float:
    """Seconds until the viewer decodes a frame of `colour` (bounded)."""
    started = time.monotonic()
    deadline = started + within
    while time.monotonic() < deadline:
        frame = (await viewer.frames(1, within=deadline - time.monotonic()))[0]
        if close_to(mean_colour(frame), colour):
            return time.monotonic() - started
    raise AssertionError(f"no {colour} frame within {within} s")


async def test_viewers_stay_through_a_studio_reconnect(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    base = str(server.make_url(""))
    async with AsyncExitStack() as stack:
        studio = await stack.enter_async_context(
            publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"], colour=RED)
        )
        await wait_live(http, server, "berlin")
        viewers = [
            await stack.enter_async_context(watching(http, url(server, "/whep/berlin")))
            for _ in range(3)
        ]
        for viewer in viewers:
            await first_frame_of(viewer, RED, within=10)
        await wait_for_viewers(http, base, "berlin", {"unknown": 3})

        # One viewer leaves with DELETE: the gauge follows at once.
        leaving = viewers.pop()
        assert leaving.session is not None
        assert await end_session(http, leaving.session) == 200
        await wait_for_viewers(http, base, "berlin", {"unknown": 2})

        # The studio ends its session and publishes again, now in blue.
        assert await end_session(http, studio.session, TOKENS["berlin"]) == 200
        await studio.pc.close()
        await asyncio.sleep(0.5)
        async with publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"], colour=BLUE):
            for viewer in viewers:
                # The viewers never negotiated again: the same sessions show the new feed.
                await first_frame_of(viewer, BLUE, within=10)
            await wait_for_viewers(http, base, "berlin", {"unknown": 2})
            assert all(v.pc.connectionState == "connected" for v in viewers)

    await wait_for_viewers(http, base, "berlin", {})
    ended = (await scrape(http, base))["meridian_viewer_sessions_ended_total"]
    assert sum(ended.values()) == 3


async def test_a_second_publish_takes_over_without_mixing_feeds(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    async with publishing(http, url(server, "/whip/cairo"), TOKENS["cairo"], colour=RED):
        await wait_live(http, server, "cairo")
        async with watching(http, url(server, "/whep/cairo")) as viewer:
            await first_frame_of(viewer, RED, within=10)
            # The studio comes back on a new connection before the old one has gone.
            async with publishing(http, url(server, "/whip/cairo"), TOKENS["cairo"], colour=BLUE):
                await first_frame_of(viewer, BLUE, within=10)
                # From now on only blue arrives: the replaced session's packets are not relayed.
                for frame in await viewer.frames(20):
                    assert close_to(mean_colour(frame), BLUE, tolerance=60), mean_colour(frame)
