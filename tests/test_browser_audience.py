"""Viewer counts on the programme, the watch page and the audience page match the metrics.

Real viewers: Chromium pages whose requests carry `CF-IPCountry` (127.0.0.1 is configured as
a trusted proxy), watching two studios that aiortc publishes. The pages must show what
`meridian_viewers{studio,country}` says, per studio and per country. For the audience
page's screenshot, `clients/audience_load.py` then brings a few hundred more real WebRTC
viewers (receiving without decoding, in a process of their own) from many countries.

Needs `GET /api/audience` and `GET /api/events` (the geography issue) for the per-country
figures; the pages themselves fall back to /api/studios without them.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from playwright.async_api import Page

from tests.browser_helpers import (
    ROOT,
    assert_plays,
    attribute,
    base_url,
    chromium,
    meridian_server,
    screenshot,
    token_for,
    wait_until,
)
from tests.metrics_probe import scrape, viewers_by_country, wait_for_viewers
from tests.rtc_peers import publishing

WATCHERS = {"berlin": ["DE", "DE", "FR"], "cairo": ["EG"]}


LOAD_VIEWERS = 120  # light WebRTC viewers (clients/audience_load.py) for the screenshot


@asynccontextmanager
async def audience_load(base: str, viewers: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """Real WHEP viewers from many countries (CF-IPCountry), in a process of their own."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients.audience_load",
        "--url",
        base,
        "--viewers",
        str(viewers),
        "--studios",
        "berlin,cairo",
        "--ramp",
        "6",
        "--duration",
        "90",
        "--churn",
        "0",
        "--seed",
        "7",
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # its viewers leave with a DELETE
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def page_count(page: Page, selector: str, name: str = "data-count") -> int | None:
    value = await attribute(page, selector, name)
    return int(value) if value not in (None, "") else None


async def wait_for_count(page: Page, selector: str, expected: int, what: str) -> None:
    await wait_until(
        lambda: page_count(page, selector),
        lambda n: n == expected,
        within=10,
        what=what,
    )


async def wait_for_attribute(page: Page, selector: str, name: str, expected: int) -> None:
    await wait_until(
        lambda: page_count(page, selector, name),
        lambda n: n == expected,
        within=10,
        what=f"{page.url} {selector}[{name}]",
    )


@pytest.mark.timeout(150)
async def test_viewer_counts_on_every_page_match_the_metrics() -> None:
    async with (
        meridian_server() as server,
        chromium() as browser,
        aiohttp.ClientSession() as http,
    ):
        base = base_url(server)
        async with (
            publishing(http, f"{base}/whip/berlin", token_for("berlin")),
            publishing(http, f"{base}/whip/cairo", token_for("cairo"), video="video/VP8"),
        ):
            watch_pages: dict[str, list[Page]] = {}
            for studio, countries in WATCHERS.items():
                for country in countries:
                    page = await browser.page(f"{base}/watch/{studio}", country=country)
                    watch_pages.setdefault(studio, []).append(page)
            for studio, pages in watch_pages.items():
                codec = "video/H264" if studio == "berlin" else "video/VP8"
                for page in pages:
                    await assert_plays(page, codec=codec, width=320, height=240)
            await wait_for_viewers(http, base, "berlin", {"DE": 2, "FR": 1})
            await wait_for_viewers(http, base, "cairo", {"EG": 1})
            metrics = {s: await viewers_by_country(http, base, s) for s in WATCHERS}
            per_studio = {s: sum(c.values()) for s, c in metrics.items()}
            total = sum(per_studio.values())

            # The programme: each studio's card, and the total.
            programme = await browser.page(f"{base}/")
            for studio, n in per_studio.items():
                card = f".studio-card[data-studio={studio}]"
                await wait_for_attribute(programme, card, "data-viewers", n)
            await wait_for_attribute(programme, "#header-stat", "data-count", total)
            assert (
                await attribute(programme, ".studio-card[data-studio=paris]", "data-viewers") == "0"
            )
            await screenshot(programme, "programme", full_page=True)
            phone = await browser.page(f"{base}/", phone=True)
            await wait_for_attribute(phone, ".studio-card[data-studio=berlin]", "data-viewers", 3)
            await screenshot(phone, "programme-phone")

            # The watch page: "3 watching from 2 countries".
            berlin = watch_pages["berlin"][0]
            await wait_for_count(berlin, "#audience", per_studio["berlin"], "watch page")
            label = await berlin.locator("#audience").inner_text()
            assert f"{per_studio['berlin']} watching from 2 countries" in label, label

            # The audience page: totals, countries, studios and the map, as the metrics say.
            audience = await browser.page(f"{base}/audience")
            await wait_for_count(audience, "#t-viewers", total, "audience total")
            await wait_for_count(audience, "#t-countries", 3, "countries now")
            by_country: dict[str, int] = {}
            for studio_countries in metrics.values():
                for country, n in studio_countries.items():
                    by_country[country] = by_country.get(country, 0) + n
            for country, n in by_country.items():
                await wait_for_attribute(
                    audience, f"#countries li[data-country={country}]", "data-viewers", n
                )
                path = f".world-map path[data-country={country}]"
                await wait_for_attribute(audience, path, "data-viewers", n)
                assert await attribute(audience, path, "fill") != "#1a2231"
            for studio, n in per_studio.items():
                item = f"#studio-totals li[data-studio={studio}]"
                await wait_for_attribute(audience, item, "data-viewers", n)
            assert await attribute(audience, ".world-map path[data-country=BR]", "fill") == (
                "#1a2231"
            )

            # A viewer leaves (DELETE on pagehide): every page follows.
            await watch_pages["berlin"][2].close()
            await wait_for_viewers(http, base, "berlin", {"DE": 2})
            ended = (await scrape(http, base))["meridian_viewer_sessions_ended_total"]
            # A clean goodbye either way: the page's DELETE, or its peer connection's
            # close when that reaches the relay first.
            assert len(ended) == 1 and sum(ended.values()) == 1.0, ended
            ((labels, _),) = ended.items()
            assert dict(labels) in (
                {"reason": "deleted", "studio": "berlin"},
                {"reason": "closed_by_peer", "studio": "berlin"},
            ), ended
            await wait_for_attribute(
                programme, ".studio-card[data-studio=berlin]", "data-viewers", 2
            )
            await wait_for_count(audience, "#t-viewers", total - 1, "audience total")
            await wait_for_count(berlin, "#audience", 2, "watch page")

            # A busy event for the screenshot: a few hundred real viewers from many countries.
            async with audience_load(base, LOAD_VIEWERS):
                # Most of them join (on a busy machine a few may time out): wait until the
                # count stops growing, then every page must show exactly that.
                everyone = await settled(
                    lambda: total_viewers(http, base),
                    at_least=total - 1 + LOAD_VIEWERS // 2,
                    within=60,
                    what="the audience load's viewers",
                )
                await wait_for_count(audience, "#t-viewers", everyone, "audience total")
                ranked = await countries_by_viewers(http, base)
                assert len(ranked) > 10, ranked
                top_country, top_n = ranked[0]
                await wait_for_attribute(
                    audience, f"#countries li[data-country={top_country}]", "data-viewers", top_n
                )
                path = f".world-map path[data-country={top_country}]"
                await wait_for_attribute(audience, path, "data-viewers", top_n)
                await audience.mouse.move(0, 0)
                await screenshot(audience, "audience", full_page=True)
                await wait_for_attribute(programme, "#header-stat", "data-count", everyone)


async def settled(
    probe: Callable[[], Awaitable[int]], *, at_least: int, within: float, what: str
) -> int:
    """The value once it is at least `at_least` and has not changed for 3 s (bounded)."""
    deadline = time.monotonic() + within
    value, since = await probe(), time.monotonic()
    while value < at_least or time.monotonic() - since < 3.0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not settled within {within:g} s; last {value}")
        await asyncio.sleep(0.5)
        seen = await probe()
        if seen != value:
            value, since = seen, time.monotonic()
    return value


async def total_viewers(http: aiohttp.ClientSession, base: str) -> int:
    gauge = (await scrape(http, base)).get("meridian_viewers", {})
    return int(sum(gauge.values()))


async def countries_by_viewers(http: aiohttp.ClientSession, base: str) -> list[tuple[str, int]]:
    """Countries (unknown aside), most viewers first, from meridian_viewers."""
    by_country: dict[str, int] = {}
    for labels, value in (await scrape(http, base)).get("meridian_viewers", {}).items():
        country = dict(labels)["country"]
        if country != "unknown":
            by_country[country] = by_country.get(country, 0) + int(value)
    return sorted(by_country.items(), key=lambda item: (-item[1], item[0]))
