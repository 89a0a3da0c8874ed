"""The studio page publishes from a real browser; the watch page plays it and recovers by itself.

Headless Chromium with its fake camera and microphone: the studio page goes live with H.264,
a viewer in a second browser context plays it (frames decoded at the published resolution,
audio received and played out), the studio stops, and goes live again with VP8: the open
watch page notices, sets up a fresh session by itself and plays VP8.
"""

from __future__ import annotations

import aiohttp
import pytest

from tests.browser_helpers import (
    assert_plays,
    base_url,
    chromium,
    go_live,
    meridian_server,
    overlay_state,
    screenshot,
    studio_health,
    studio_state,
    token_for,
    unmute,
    wait_until,
)
from tests.metrics_probe import scrape


async def studio_live(http: aiohttp.ClientSession, base: str, studio: str) -> bool:
    async with http.get(f"{base}/api/studios") as response:
        studios = (await response.json())["studios"]
    return bool(next(s for s in studios if s["id"] == studio)["live"])


@pytest.mark.timeout(150)
async def test_studio_page_publishes_h264_then_vp8_and_the_watch_page_follows() -> None:
    async with meridian_server() as server, chromium() as browser, aiohttp.ClientSession() as http:
        base = base_url(server)
        studio = await browser.page(f"{base}/studio/berlin")
        await go_live(studio, token_for("berlin"), "H264")
        await wait_until(
            lambda: studio_state(studio), lambda s: s == "connected", within=20, what="on air"
        )
        await wait_until(
            lambda: studio_live(http, base, "berlin"), bool, within=10, what="berlin live"
        )

        viewer = await browser.page(f"{base}/watch/berlin")
        await unmute(viewer)
        await assert_plays(viewer, codec="video/H264", width=640, height=360)

        health = await wait_until(
            lambda: studio_health(studio),
            lambda h: bool(h.get("bitrate")) and h.get("rtt") is not None,
            within=10,
            what="the studio page's live health",
        )
        assert health["video"]["codec"] == "video/H264"
        assert (health["video"]["frameWidth"], health["video"]["frameHeight"]) == (640, 360)
        await wait_until(
            lambda: studio.locator("#h-viewers").get_attribute("data-count"),
            lambda n: n == "1",
            within=10,
            what="the studio page's viewer count",
        )
        await screenshot(studio, "studio", full_page=True)

        # Stop: the studio's session ends at once (DELETE) and the player says so.
        await studio.click("#stop")
        await wait_until(
            lambda: studio_live(http, base, "berlin"), lambda live: not live, within=5, what="off"
        )
        ended = (await scrape(http, base)).get("meridian_studio_sessions_ended_total", {})
        assert ended.get((("reason", "deleted"), ("studio", "berlin"))) == 1, ended
        # "off air" (the session kept for the studio's return), or "starts soon" had the
        # player set up a fresh session meanwhile: either way it says the studio is gone.
        await wait_until(
            lambda: overlay_state(viewer),
            lambda s: s in ("off-air", "offline"),
            within=10,
            what="the player saying the studio is off air",
        )

        # Live again with VP8: the watch page recovers without anyone touching it.
        await go_live(studio, token_for("berlin"), "VP8")
        await wait_until(
            lambda: studio_state(studio), lambda s: s == "connected", within=20, what="on air"
        )
        await assert_plays(viewer, codec="video/VP8", width=640, height=360, within=30)
        await wait_until(
            lambda: overlay_state(viewer), lambda s: s == "playing", within=10, what="playing"
        )


@pytest.mark.timeout(60)
async def test_bad_token_on_the_studio_page_is_explained() -> None:
    async with meridian_server() as server, chromium() as browser, aiohttp.ClientSession() as http:
        base = base_url(server)
        studio = await browser.page(f"{base}/studio/cairo")
        await go_live(studio, "not-the-cairo-token-0000", "H264")
        alert = studio.locator("#error")
        await alert.wait_for(state="visible", timeout=15_000)
        text = await alert.inner_text()
        assert "Wrong studio token" in text, text
        assert "401" in text and "cairo" in text.lower(), text
        assert await studio_state(studio) in ("off-air", "failed")
        assert await studio.locator("#golive").is_visible()
        assert not await studio_live(http, base, "cairo")
        await screenshot(studio, "studio-bad-token")
