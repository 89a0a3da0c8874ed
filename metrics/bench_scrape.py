"""How long Prometheus' scrape of /metrics takes with many viewers in relay state.

    python -m metrics.bench_scrape                    # 10,000 viewers, 8 studios
    python -m metrics.bench_scrape --viewers 50000 --rounds 10

Puts N viewers in relay state (every one flowing, joined, with a sink on each of its
studio's tracks, spread over 8 studios and 60 countries), registers Meridian's metrics
on it as the application does, serves `/metrics` and `/api/audience` the way `server/`
does (`generate_latest`; `audience_snapshot` through orjson) on loopback, and times a
scrape through HTTP, the exposition alone, and the audience document. (metrics/ must
not import server/, hence the two-route app here.) The viewers are stand-ins with no
peer connection: what is measured is what a scrape reads, not WebRTC.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from config.loader import COUNTRY_CODES
from metrics.audience import audience_snapshot
from metrics.relay_metrics import RelayMetrics
from relay.source import Source
from relay.track import OutputTrack

STUDIOS = ("tashkent", "cairo", "berlin", "paris", "jakarta", "beijing", "lima", "buenos-aires")


class BenchViewer:
    """What a source reads of a viewer session."""

    __slots__ = ("country", "flowing")

    def __init__(self, country: str) -> None:
        self.country = country
        self.flowing = True

    def end(self, reason: str) -> None:
        self.flowing = False


class BenchSink:
    """A track sink that has sent some packets and sends nothing more."""

    def __init__(self, payload_type: int) -> None:
        self.payload_type = payload_type
        self.entry: tuple[Callable[[bytes], bytes], Callable[[bytes], None]] = (_same, _nowhere)
        self.sent_packets = self.packets = 31_000
        self.sent_octets = self.octets = 31_000_000
        self.dropped = 0
        self.group_base: tuple[int, int] | None = None
        self.slow_since: int | None = None

    def started(self) -> None: ...

    def fell_behind(self) -> None: ...

    def failed(self) -> None: ...

    def send_rtp(self, packet: bytes, starts_keyframe: bool) -> None: ...

    def wait_for_keyframe(self) -> None: ...


def _same(data: bytes) -> bytes:
    return data


def _nowhere(data: bytes) -> None: ...


class BenchState:
    """Relay state with `viewers` viewers, and the metrics registered on it."""

    def __init__(self, viewers: int, studios: int) -> None:
        self.registry = CollectorRegistry()
        self.sources = {studio: Source(studio) for studio in STUDIOS[:studios]}
        self.metrics = RelayMetrics(self.registry, lambda: self.sources)
        countries = [*sorted(COUNTRY_CODES)[:59], "unknown"]
        sources = list(self.sources.values())
        for source in sources:
            for kind in ("video", "audio"):
                track = source.tracks[kind] = OutputTrack(kind)
                track.packets_in, track.bytes_in = 1_000_000, 1_000_000_000
        for index in range(viewers):
            source = sources[index % len(sources)]
            viewer = BenchViewer(countries[(index * 7) % len(countries)])
            source.add_viewer(viewer)
            for track in source.tracks.values():
                track.add_sink(BenchSink(96 if track.kind == "video" else 111))
            join_seconds = 0.25 + (index % 9) / 10
            self.metrics.viewer_joined(viewer, source.studio_id, viewer.country, join_seconds)

    def app(self) -> web.Application:
        async def metrics(request: web.Request) -> web.Response:
            body = generate_latest(self.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def audience(request: web.Request) -> web.Response:
            document = audience_snapshot(self.sources, self.sources, self.metrics.audience)
            return web.Response(body=orjson.dumps(document), content_type="application/json")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/api/audience", audience)
        return app


async def timed(rounds: int, call: Callable[[], Awaitable[int]]) -> tuple[list[float], int]:
    """Seconds per call, after one warm-up call; and the size of the last answer."""
    size = await call()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        size = await call()
        times.append(time.perf_counter() - started)
    return times, size


def summary(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms"


async def run(args: argparse.Namespace) -> dict[str, float]:
    state = BenchState(args.viewers, args.studios)
    runner = web.AppRunner(state.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def get(path: str) -> int:
                async with http.get(base + path) as response:
                    response.raise_for_status()
                    return len(await response.read())

            scrape, size = await timed(args.rounds, lambda: get("/metrics"))
            audience, audience_size = await timed(args.rounds, lambda: get("/api/audience"))

        async def expose() -> int:
            return len(generate_latest(state.registry))

        exposition, _ = await timed(args.rounds, expose)
    finally:
        await runner.cleanup()
    print(
        f"GET /metrics with {args.viewers} viewers in state ({args.studios} studios, "
        f"60 countries, {size / 1024:.0f} KiB): {summary(scrape)} over {args.rounds} scrapes"
    )
    print(f"  of which the exposition (generate_latest): {summary(exposition)}")
    print(f"GET /api/audience ({audience_size / 1024:.1f} KiB): {summary(audience)}")
    return {
        "scrape_median_s": statistics.median(scrape),
        "exposition_median_s": statistics.median(exposition),
        "audience_median_s": statistics.median(audience),
        "metrics_bytes": float(size),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m metrics.bench_scrape", description=__doc__)
    parser.add_argument("--viewers", type=int, default=10_000)
    parser.add_argument("--studios", type=int, default=8, choices=range(1, len(STUDIOS) + 1))
    parser.add_argument("--rounds", type=int, default=20)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    asyncio.run(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
