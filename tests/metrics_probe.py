"""Reading Meridian's /metrics in tests."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


async def scrape(
    http: aiohttp.ClientSession, base_url: str
) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Metric name -> {sorted label pairs: value}."""
    async with http.get(base_url + "/metrics") as response:
        text = await response.text()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def viewers_by_country(
    http: aiohttp.ClientSession, base_url: str, studio: str
) -> dict[str, int]:
    gauge = (await scrape(http, base_url)).get("meridian_viewers", {})
    return {
        dict(labels)["country"]: int(value)
        for labels, value in gauge.items()
        if dict(labels)["studio"] == studio
    }


async def wait_for_viewers(
    http: aiohttp.ClientSession,
    base_url: str,
    studio: str,
    expected: dict[str, int],
    within: float = 10.0,
) -> None:
    """Poll until the viewer gauge equals `expected` exactly (bounded)."""
    seen: dict[str, int] = {}
    for _ in range(int(within / 0.1)):
        seen = await viewers_by_country(http, base_url, studio)
        if seen == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"meridian_viewers for {studio}: expected {expected}, saw {seen}")
