"""Real headless Chromium against Meridian's pages, driven by Playwright (async API).

Chromium is Debian's (`/usr/bin/chromium`, installed by `make system-deps`); Playwright's own
browser download is never used. The browser reaches the server at http://127.0.0.1:<port>,
where getUserMedia works without TLS, with a fake camera and microphone. Every wait here is
bounded, and a page's uncaught JavaScript errors fail the test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize, async_playwright
from prometheus_client import CollectorRegistry

from config.settings import (
    DemoSettings,
    GeoSettings,
    LimitSettings,
    RelaySettings,
    Settings,
    StudioSettings,
)
from server.app import create_app
from tests.conftest import TOKENS

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# From /work/shared/INTEROP.md: what works on these machines, headless and as root.
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}

# The marathon's eight capitals; berlin and cairo keep the suite's usual tokens.
CAPITALS = (
    ("tashkent", "Tashkent studio", "UZ", "Tashkent"),
    ("cairo", "Cairo studio", "EG", "Cairo"),
    ("berlin", "Berlin studio", "DE", "Berlin"),
    ("paris", "Paris studio", "FR", "Paris"),
    ("jakarta", "Jakarta studio", "ID", "Jakarta"),
    ("beijing", "Beijing studio", "CN", "Beijing"),
    ("lima", "Lima studio", "PE", "Lima"),
    ("buenos-aires", "Buenos Aires studio", "AR", "Buenos Aires"),
)


def token_for(studio: str) -> str:
    return TOKENS.get(studio, f"{studio}-token-0123456789")


def browser_settings() -> Settings:
    """Eight studios; offline viewers retry after 1 s; 127.0.0.1 is a trusted proxy, so a
    browser context's `CF-IPCountry` header places its viewers in a country, and its
    request rate is a crowd's."""
    return Settings(
        studios=tuple(
            StudioSettings(sid, name, country, city, token_for(sid))
            for sid, name, country, city in CAPITALS
        ),
        demo=DemoSettings(enabled=False),
        relay=RelaySettings(offline_retry_after=1),
        geo=GeoSettings(trusted_proxies=("127.0.0.1/32",)),
        # Every browser and load viewer of these tests shares one address, 127.0.0.1.
        limits=LimitSettings(rate_per_second=1000.0, rate_burst=1000),
    )


@asynccontextmanager
async def meridian_server() -> AsyncIterator[TestServer]:
    server = TestServer(create_app(browser_settings(), CollectorRegistry()), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def base_url(server: TestServer) -> str:
    return f"http://127.0.0.1:{server.port}"


@dataclass
class Chromium:
    """One browser; each page gets a context of its own (its own session storage, headers)."""

    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def page(self, url: str, *, phone: bool = False, country: str | None = None) -> Page:
        """Open `url` in a new context: a desktop window, or a phone (touch, 2x pixels);
        `country` is sent as CF-IPCountry, as a CDN in front of Meridian would."""
        context = await self.browser.new_context(
            viewport=PHONE if phone else DESKTOP,
            device_scale_factor=2 if phone else 1,
            is_mobile=phone,
            has_touch=phone,
            extra_http_headers={"CF-IPCountry": country} if country else None,
        )
        self.contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        await page.goto(url)
        return page

    def check_no_errors(self) -> None:
        assert not self.errors, "JavaScript errors in the pages:\n" + "\n".join(self.errors)


def chromium_path() -> str:
    """Debian's Chromium, or a loud failure saying how to install it (never a skip)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. "
            "Run `make system-deps` as root, or: apt-get install chromium chromium-driver "
            "fonts-liberation fonts-noto-color-emoji"
        )
    return str(CHROMIUM)


@asynccontextmanager
async def chromium() -> AsyncIterator[Chromium]:
    executable = chromium_path()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=LAUNCH_ARGS, headless=True
        )
        session = Chromium(browser)
        try:
            yield session
            session.check_no_errors()
        finally:
            for context in session.contexts:
                await context.close()
            await browser.close()


T = TypeVar("T")


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    within: float,
    what: str,
    every: float = 0.25,
) -> T:
    """Poll `probe` until `accept` says yes (bounded); fail saying what was last seen."""
    deadline = time.monotonic() + within
    seen = await probe()
    while not accept(seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s; last seen {seen!r}")
        await asyncio.sleep(every)
        seen = await probe()
    return seen


# ----------------------------------------------------------------------------- studio page


async def go_live(page: Page, token: str, codec: str, resolution: str = "640x360") -> None:
    """Fill the studio form as a person would and press Go live."""
    await page.fill("#token", token)
    await page.select_option("#resolution", resolution)
    await page.locator(f"label:has(input[name=codec][value={codec}])").click()
    await page.click("#golive")


async def studio_state(page: Page) -> str:
    return str(await page.evaluate("document.body.dataset.studioState ?? ''"))


async def studio_health(page: Page) -> dict[str, Any]:
    health: dict[str, Any] | None = await page.evaluate("window.meridianStudio.health")
    return health or {}


# ----------------------------------------------------------------------------- watch page


async def playback(page: Page) -> dict[str, Any]:
    """The watch page's latest getStats() summary (window.meridianWatch.stats)."""
    stats: dict[str, Any] | None = await page.evaluate("window.meridianWatch.stats")
    return stats or {}


async def video_size(page: Page) -> tuple[int, int]:
    size: list[int] = await page.evaluate(
        "(video => [video.videoWidth, video.videoHeight])(document.getElementById('video'))"
    )
    return size[0], size[1]


async def overlay_state(page: Page) -> str:
    return str(await page.evaluate("document.getElementById('overlay').dataset.state ?? ''"))


async def unmute(page: Page) -> None:
    """Click "Tap to unmute" (a real user gesture) and check the video is unmuted."""
    await page.click("#unmute")
    assert await page.evaluate("document.getElementById('video').muted") is False


async def assert_plays(
    page: Page, *, codec: str, width: int, height: int, within: float = 20.0
) -> dict[str, Any]:
    """The page decodes frames of `codec` at width x height, and audio arrives and plays out."""

    def video_of(stats: dict[str, Any]) -> dict[str, Any]:
        return stats.get("video") or {}

    def audio_of(stats: dict[str, Any]) -> dict[str, Any]:
        return stats.get("audio") or {}

    first = await wait_until(
        lambda: playback(page),
        lambda s: (
            video_of(s).get("framesDecoded", 0) > 0
            and str(video_of(s).get("codec", "")).lower() == codec.lower()
            and audio_of(s).get("packetsReceived", 0) > 0
        ),
        within=within,
        what=f"{page.url} decoding {codec}",
    )
    later = await wait_until(
        lambda: playback(page),
        lambda s: (
            video_of(s).get("framesDecoded", 0) >= video_of(first)["framesDecoded"] + 20
            and audio_of(s).get("packetsReceived", 0) > audio_of(first)["packetsReceived"]
            and audio_of(s).get("totalSamplesReceived", 0)
            > audio_of(first).get("totalSamplesReceived", 0)
        ),
        within=10.0,
        what=f"{page.url}: frames decoded and audio received growing",
    )
    video = video_of(later)
    assert (video["frameWidth"], video["frameHeight"]) == (width, height), video
    assert await wait_until(
        lambda: video_size(page), lambda size: size == (width, height), within=5, what="<video>"
    )
    return later


async def screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """Write docs/screenshots/<name>.png (committed: the README shows them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page, animations="disabled")
    return path


async def attribute(page: Page, selector: str, name: str) -> str | None:
    locator = page.locator(selector)
    if await locator.count() == 0:
        return None
    return await locator.first.get_attribute(name)
