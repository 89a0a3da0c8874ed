"""The live audience API: `GET /api/audience` and the `GET /api/events` stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from metrics.audience import AudienceLedger, audience_snapshot
from relay.source import Source
from server.app import create_app
from server.audience import FEED
from server.state import METRICS, SOURCES
from tests.conftest import make_settings, url
from tests.test_metrics import FakeViewer


def watch(server: TestServer, studio: str, country: str) -> FakeViewer:
    """A viewer in relay state that saw its first keyframe, as the WHEP path records it."""
    viewer = FakeViewer(country)
    server.app[SOURCES][studio].add_viewer(viewer)
    server.app[METRICS].viewer_joined(viewer, studio, country, 0.3)
    return viewer


def leave(server: TestServer, studio: str, viewer: FakeViewer) -> None:
    server.app[SOURCES][studio].remove_viewer(viewer)
    server.app[METRICS].viewer_left(viewer)


@pytest.fixture
async def fast_server() -> AsyncIterator[TestServer]:
    """Meridian with the audience feed ticking every 0.2 s (1 s in production)."""
    app = create_app(make_settings(), CollectorRegistry())
    app[FEED].interval = 0.2
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


class EventReader:
    """Reads server-sent events (and comments) from a streaming response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, within: float = 5.0) -> tuple[str, bytes]:
        """("audience", data) for an event, (":", text) for a comment."""
        lines: list[bytes] = []
        async with asyncio.timeout(within):
            while True:
                line = (await self.response.content.readline()).rstrip(b"\n")
                if not line and lines:
                    break
                if line:
                    lines.append(line)
        if lines[0].startswith(b":"):
            return ":", lines[0][1:].strip()
        fields = dict(line.split(b": ", 1) for line in lines)
        return fields[b"event"].decode(), fields[b"data"]


def test_snapshot_shape_and_order() -> None:
    sources = {"berlin": Source("berlin"), "cairo": Source("cairo"), "lima": Source("lima")}
    ledger = AudienceLedger("unknown")
    placed = [("berlin", "DE")] * 3 + [("berlin", "FR"), ("berlin", "unknown"), ("cairo", "FR")]
    for studio, country in placed:
        viewer = FakeViewer(country)
        sources[studio].add_viewer(viewer)
        ledger.joined(viewer, studio, country)
    sources["cairo"].add_viewer(FakeViewer("JP", flowing=False))  # still connecting
    gone = object()
    ledger.joined(gone, "lima", "PE")
    ledger.left(gone)
    assert audience_snapshot(["berlin", "cairo", "lima"], sources, ledger) == {
        "viewers": 6,
        "countries_now": 2,
        "countries_since_start": 3,
        "sessions_since_start": 7,
        "studios": [
            {"id": "berlin", "viewers": 5, "countries": {"DE": 3, "FR": 1, "unknown": 1}},
            {"id": "cairo", "viewers": 1, "countries": {"FR": 1}},
            {"id": "lima", "viewers": 0, "countries": {}},
        ],
        "countries": [
            {"country": "DE", "viewers": 3},
            {"country": "FR", "viewers": 2},
            {"country": "unknown", "viewers": 1},
        ],
    }


async def test_audience_endpoint(server: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.get(url(server, "/api/audience")) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {
            "viewers": 0,
            "countries_now": 0,
            "countries_since_start": 0,
            "sessions_since_start": 0,
            "studios": [
                {"id": "berlin", "viewers": 0, "countries": {}},
                {"id": "cairo", "viewers": 0, "countries": {}},
            ],
            "countries": [],
        }
    watch(server, "berlin", "DE")
    watch(server, "cairo", "DE")
    watch(server, "cairo", "EG")
    async with http.get(url(server, "/api/audience")) as response:
        document = await response.json()
    assert (document["viewers"], document["countries_now"]) == (3, 2)
    assert document["countries"] == [
        {"country": "DE", "viewers": 2},
        {"country": "EG", "viewers": 1},
    ]


async def test_events_stream_changes_at_most_once_per_second(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    viewer = watch(server, "berlin", "DE")
    async with http.get(url(server, "/api/events")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        events = EventReader(response)
        started = time.monotonic()
        kind, data = await events.next(within=1.0)  # at once on connect
        assert kind == "audience"
        assert orjson.loads(data)["viewers"] == 1
        # Three changes in quick succession: one message, no sooner than 1 s after the first.
        watch(server, "berlin", "FR")
        watch(server, "cairo", "EG")
        leave(server, "berlin", viewer)
        kind, data = await events.next(within=3.0)
        assert time.monotonic() - started >= 0.95
        document = orjson.loads(data)
        assert (document["viewers"], document["countries_now"]) == (2, 2)
        assert document["sessions_since_start"] == 3
        # Nothing changes: nothing is sent.
        with pytest.raises(TimeoutError):
            await events.next(within=1.6)


async def test_events_keepalive_and_disconnect(
    fast_server: TestServer, http: aiohttp.ClientSession
) -> None:
    feed = fast_server.app[FEED]
    feed.keepalive = 0.3
    async with http.get(url(fast_server, "/api/events")) as response:
        events = EventReader(response)
        assert (await events.next())[0] == "audience"
        assert await events.next(within=2.0) == (":", b"keepalive")
        assert feed.listeners == 1
    # The client went away: the server notices within a tick and forgets it.
    for _ in range(50):
        if feed.listeners == 0:
            break
        await asyncio.sleep(0.1)
    assert feed.listeners == 0


async def test_many_listeners_share_one_document(
    fast_server: TestServer, http: aiohttp.ClientSession
) -> None:
    feed = fast_server.app[FEED]
    async with asyncio.TaskGroup() as group:
        responses = [
            group.create_task(http.get(url(fast_server, "/api/events"))) for _ in range(20)
        ]
    readers = [EventReader(task.result()) for task in responses]
    try:
        for reader in readers:
            assert (await reader.next())[0] == "audience"
        assert feed.listeners == 20
        watch(fast_server, "cairo", "EG")
        for reader in readers:
            _, data = await reader.next(within=3.0)
            assert orjson.loads(data)["countries"] == [{"country": "EG", "viewers": 1}]
    finally:
        for reader in readers:
            reader.response.close()


async def test_shutdown_ends_every_stream(http: aiohttp.ClientSession) -> None:
    server = TestServer(create_app(make_settings(), CollectorRegistry()), host="127.0.0.1")
    await server.start_server()
    feed = server.app[FEED]
    async with http.get(url(server, "/api/events")) as response:
        events = EventReader(response)
        assert (await events.next())[0] == "audience"
        started = time.monotonic()
        await server.close()
        assert time.monotonic() - started < 5  # no waiting for the stream to end by itself
        assert await response.content.read() == b""  # the stream ended
    assert feed.listeners == 0 and feed.closing


async def test_cross_origin_stream(server: TestServer, http: aiohttp.ClientSession) -> None:
    headers = {"Origin": "https://watch.example"}
    async with http.get(url(server, "/api/events"), headers=headers) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        response.close()
