"""FFmpeg's WHIP muxer publishes; the watch page in Chromium waits for it, plays it, and
recovers by itself when the studio stops and goes live again."""

from __future__ import annotations

import pytest

from tests.browser_helpers import (
    assert_plays,
    base_url,
    chromium,
    meridian_server,
    overlay_state,
    playback,
    screenshot,
    token_for,
    unmute,
    wait_until,
)
from tests.ffmpeg_studio import HEIGHT, WIDTH, ffmpeg_publishing

PUBLISH_SECONDS = 60.0  # longer than the test needs; each run is ended with 'q'


@pytest.mark.timeout(150)
async def test_watch_page_plays_ffmpeg_and_recovers_when_the_studio_returns() -> None:
    async with meridian_server() as server, chromium() as browser:
        base = base_url(server)
        endpoint = f"{base}/whip/berlin"

        # Before the studio is live: "starts soon", retrying as Retry-After says.
        viewer = await browser.page(f"{base}/watch/berlin")
        await wait_until(
            lambda: overlay_state(viewer), lambda s: s == "offline", within=10, what="offline"
        )
        assert "starts soon" in (await viewer.locator("#overlay-title").inner_text())
        phone = await browser.page(f"{base}/watch/berlin", phone=True)
        await screenshot(phone, "watch-phone-offline")

        async with ffmpeg_publishing(endpoint, token_for("berlin"), seconds=PUBLISH_SECONDS) as ff:
            await unmute(viewer)
            try:
                await assert_plays(viewer, codec="video/H264", width=WIDTH, height=HEIGHT)
                await assert_plays(phone, codec="video/H264", width=WIDTH, height=HEIGHT)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nFFmpeg:\n{ff.log_tail()}") from None
            await wait_until(
                lambda: viewer.locator("#audience").get_attribute("data-count"),
                lambda n: n == "2",
                within=10,
                what="2 watching",
            )
            await screenshot(viewer, "watch")
            await screenshot(phone, "watch-phone")
            session = await viewer.evaluate("window.meridianWatch.player.resourceUrl")
            await ff.quit()

        # The studio is gone: the page says so and keeps its session for the return.
        await wait_until(
            lambda: overlay_state(viewer), lambda s: s == "off-air", within=15, what="off air"
        )
        frames_before = (await playback(viewer))["video"]["framesDecoded"]

        async with ffmpeg_publishing(endpoint, token_for("berlin"), seconds=PUBLISH_SECONDS) as ff:
            try:
                stats = await assert_plays(
                    viewer, codec="video/H264", width=WIDTH, height=HEIGHT, within=30
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nFFmpeg:\n{ff.log_tail()}") from None
            assert stats["video"]["framesDecoded"] > frames_before
            await wait_until(
                lambda: overlay_state(viewer), lambda s: s == "playing", within=10, what="playing"
            )
            # Same codec: the relay carried the viewer's session across the studio's return.
            assert await viewer.evaluate("window.meridianWatch.player.resourceUrl") == session
            await ff.quit()
