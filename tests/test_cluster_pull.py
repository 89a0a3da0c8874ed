"""An origin and edges in one process, a real Redis: redirects, edge pulls, the pull tree.

The nodes are real aiohttp servers on real sockets with real aiortc peers; only the
processes are shared (tests/test_cluster.py runs them as separate processes).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiortc import RTCPeerConnection
from prometheus_client import CollectorRegistry

from clients.webrtc_client import WebRtcHttpError, negotiate
from cluster.http import CLUSTER
from config.settings import Settings, ViewerTokenSettings
from ingest.edge_pull import EdgePull
from relay.source import Source
from server.app import create_app
from server.state import SOURCES
from server.viewer_tokens import issue
from tests.cluster_nodes import CLUSTER_TOKEN, cluster_settings, eventually, studio_origins
from tests.conftest import TOKENS, make_settings
from tests.metrics_probe import viewers_by_country
from tests.redis_server import RedisServer, running_redis
from tests.rtc_peers import Viewer, close_to, mean_colour, publishing, rtc_config, watching
from tests.server_process import free_port

COLOUR = (50, 70, 220)


@asynccontextmanager
async def watching_when_pulled(http: aiohttp.ClientSession, endpoint: str) -> AsyncIterator[Viewer]:
    """A viewer that, like the watch page, tries again while an edge's pull is starting
    (409 with Retry-After), a bounded number of times."""
    for _ in range(20):
        try:
            async with watching(http, endpoint) as viewer:
                yield viewer
                return
        except WebRtcHttpError as refused:
            if refused.status != 409:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError(f"{endpoint} stayed off air")


@asynccontextmanager
async def node(
    redis_server: RedisServer,
    role: str,
    node_id: str,
    base_settings: Settings | None = None,
    **cluster: Any,
) -> AsyncIterator[TestServer]:
    port = free_port()
    settings = cluster_settings(
        base_settings or make_settings(), role, node_id, port, redis_server.url, **cluster
    )
    server = TestServer(create_app(settings, CollectorRegistry()), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def source(server: TestServer, studio: str = "berlin") -> Source:
    return server.app[SOURCES][studio]


def root(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def nodes_known(server: TestServer, count: int) -> None:
    cluster = server.app[CLUSTER]

    async def known() -> int:
        snapshot = cluster.current()
        return len(snapshot.nodes) if snapshot is not None else 0

    await eventually(known, lambda n: n >= count, 10.0, "nodes in the directory")


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with running_redis(tmp_path / "redis") as server:
        yield server


async def test_a_viewer_at_the_origin_is_sent_to_an_edge_that_pulls_the_studio(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with (
        node(redis_server, "origin", "origin") as origin,
        node(redis_server, "edge", "edge1") as edge,
    ):
        await nodes_known(origin, 2)
        async with publishing(http, f"{root(origin)}/whip/berlin", TOKENS["berlin"], colour=COLOUR):
            client = redis_server.client()
            try:
                await eventually(
                    lambda: studio_origins(client),
                    lambda held: held.get("berlin") == "origin",
                    10.0,
                    "the origin's claim of berlin",
                )
            finally:
                await client.aclose()
            await nodes_known(origin, 2)
            async with watching_when_pulled(http, f"{root(origin)}/whep/berlin") as viewer:
                assert viewer.session is not None
                assert viewer.session.url.startswith(root(edge) + "/whep/berlin/")
                frames = await viewer.frames(5)
                assert close_to(mean_colour(frames[-1]), COLOUR)
                # The edge pulls once; the origin serves it as a downstream node, not a viewer.
                assert isinstance(source(edge).publisher, EdgePull)
                assert len(source(origin).downstream) == 1 and not source(origin).viewers
                assert await viewers_by_country(http, root(edge), "berlin") == {"unknown": 1}
                assert await viewers_by_country(http, root(origin), "berlin") == {}
            # The last viewer left: the pull is dropped after the grace period.
            await eventually(
                lambda: _count(source(origin).downstream),
                lambda n: n == 0,
                10.0,
                "the origin's downstream pulls",
            )
            assert source(edge).publisher is None


async def _count(items: set[Any]) -> int:
    return len(items)


async def test_pulls_beyond_the_origins_bound_go_to_an_edge_that_has_the_feed(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with AsyncExitStack() as stack:
        origin = await stack.enter_async_context(
            node(redis_server, "origin", "origin", max_edge_pulls=1)
        )
        first = await stack.enter_async_context(node(redis_server, "edge", "edge1"))
        second = await stack.enter_async_context(node(redis_server, "edge", "edge2"))
        await nodes_known(origin, 3)
        await stack.enter_async_context(
            publishing(http, f"{root(origin)}/whip/berlin", TOKENS["berlin"], colour=COLOUR)
        )
        await held_by(first, "origin")
        await held_by(second, "origin")
        # Straight to each edge (hop=1: no more redirects), the first edge first.
        one = await stack.enter_async_context(
            watching_when_pulled(http, f"{root(first)}/whep/berlin?hop=1")
        )
        await one.frames(3)
        await nodes_known(second, 3)

        async def first_has_feed() -> bool:
            snapshot = second.app[CLUSTER].current()
            return snapshot is not None and "berlin" in snapshot.nodes["edge1"].feeds

        await eventually(first_has_feed, bool, 10.0, "edge1's feed in the directory")
        two = await stack.enter_async_context(
            watching_when_pulled(http, f"{root(second)}/whep/berlin?hop=1")
        )
        frames = await two.frames(5)
        assert close_to(mean_colour(frames[-1]), COLOUR)
        pull = source(second).publisher
        assert isinstance(pull, EdgePull)
        assert (pull.upstream, pull.depth) == ("edge1", 2)
        assert len(source(origin).downstream) == 1
        assert len(source(first).downstream) == 1


async def _live(server: TestServer) -> bool:
    return source(server).live


async def held_by(server: TestServer, origin: str | None, studio: str = "berlin") -> None:
    """Wait until `server`'s directory view says `origin` holds `studio`."""
    cluster = server.app[CLUSTER]

    async def holder() -> str | None:
        snapshot = cluster.current()
        return snapshot.studios.get(studio) if snapshot is not None else None

    await eventually(holder, lambda held: held == origin, 10.0, f"{studio}'s origin")


async def test_a_pull_needs_the_cluster_token(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with node(redis_server, "origin", "origin") as origin:
        headers = {"Content-Type": "application/sdp", "X-Meridian-Node": "intruder"}
        for token in (None, "not-the-cluster-token-0123456789"):
            sent = {**headers, **({"Authorization": f"Bearer {token}"} if token else {})}
            async with http.post(f"{root(origin)}/whep/berlin", data="v=0\r\n", headers=sent) as r:
                assert r.status == 401
                assert r.content_type == "application/problem+json"
        assert CLUSTER_TOKEN  # the right one is tried by every other test here


async def test_cluster_pages_may_follow_a_redirect_to_another_node(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    """A WHEP offer may be sent on to an edge at another origin (scheme, host or port):
    a cluster node's pages may connect there, a single node's only to itself."""
    async with (
        node(redis_server, "edge", "edge1") as edge,
        http.get(f"{root(edge)}/watch/berlin") as response,
    ):
        assert response.status == 200
        policy = response.headers["Content-Security-Policy"]
    assert "connect-src 'self' http: https:;" in policy, policy
    assert "script-src 'self';" in policy, policy  # the rest stays as strict


async def test_an_edge_sends_studios_to_the_origin(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    async with (
        node(redis_server, "origin", "origin") as origin,
        node(redis_server, "edge", "edge1") as edge,
    ):
        await nodes_known(edge, 2)
        async with http.post(
            f"{root(edge)}/whip/berlin",
            data="v=0\r\n",
            headers={"Content-Type": "application/sdp"},
            allow_redirects=False,
        ) as response:
            assert response.status == 307
            assert response.headers["Location"] == f"{root(origin)}/whip/berlin"
        # Like browsers and curl, the client sends the studio's token to the same origin
        # only, so a studio publishes to an origin's URL; the redirect says which one.
        async with publishing(http, response.headers["Location"], TOKENS["berlin"]) as studio:
            assert studio.session.url.startswith(root(origin) + "/whip/berlin/")


async def test_edge_viewers_follow_a_studio_that_returns_and_then_moves_origin(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    """The studio drops and comes back to its origin, then publishes to another origin:
    the edge's viewer keeps its session throughout and sees each new feed."""
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(node(redis_server, "origin", "o1"))
        second = await stack.enter_async_context(node(redis_server, "origin", "o2"))
        edge = await stack.enter_async_context(node(redis_server, "edge", "edge1"))
        await nodes_known(edge, 3)
        colours = [(220, 40, 40), (40, 200, 60), (50, 70, 220)]
        async with publishing(
            http, f"{root(first)}/whip/berlin", TOKENS["berlin"], colour=colours[0]
        ):
            await held_by(edge, "o1")
            viewer = await stack.enter_async_context(watching(http, f"{root(edge)}/whep/berlin"))
            assert close_to(mean_colour((await viewer.frames(5))[-1]), colours[0])
        # Back to the same origin: the pull never broke, the viewer resumes.
        async with publishing(
            http, f"{root(first)}/whip/berlin", TOKENS["berlin"], colour=colours[1]
        ):
            await wait_for_colour(viewer, colours[1])
        await held_by(edge, None)
        # Once the edge's feed has gone silent, a new viewer is told at once that the
        # studio is off air (the pull stays, waiting for the studio).
        await eventually(lambda: _live(edge), lambda live: not live, 10.0, "the edge's feed")
        started = asyncio.get_running_loop().time()
        with pytest.raises(WebRtcHttpError) as offline:
            async with watching(http, f"{root(edge)}/whep/berlin?hop=1"):
                pass
        assert offline.value.status == 409
        assert asyncio.get_running_loop().time() - started < 3.0
        # Now to the other origin: the edge pulls from there, the viewer sees it.
        async with publishing(
            http, f"{root(second)}/whip/berlin", TOKENS["berlin"], colour=colours[2]
        ):
            await held_by(edge, "o2")
            await wait_for_colour(viewer, colours[2])
            pull = source(edge).publisher
            assert isinstance(pull, EdgePull) and pull.upstream == "o2"
        assert viewer.pc.connectionState == "connected"


async def wait_for_colour(viewer: Viewer, colour: tuple[int, int, int]) -> None:
    async def latest() -> tuple[int, int, int]:
        return mean_colour((await viewer.frames(1))[-1])

    await eventually(latest, lambda seen: close_to(seen, colour), 20.0, "the viewer's picture")


async def test_a_viewer_token_goes_along_with_the_redirect(
    redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    """Clients drop Authorization on a redirect to another origin: the token rides along
    in the Location (access_token) and the edge takes it as the bearer token."""
    secret = "viewer-token-secret-0123456789abcdef0123"
    defaults = make_settings()
    studios = tuple(
        dataclasses.replace(s, require_viewer_token=True) if s.id == "berlin" else s
        for s in defaults.studios
    )
    private = dataclasses.replace(
        defaults, studios=studios, viewer_tokens=ViewerTokenSettings(secret=secret)
    )
    async with AsyncExitStack() as stack:
        origin = await stack.enter_async_context(node(redis_server, "origin", "origin", private))
        edge = await stack.enter_async_context(node(redis_server, "edge", "edge1", private))
        await nodes_known(origin, 2)
        await stack.enter_async_context(
            publishing(http, f"{root(origin)}/whip/berlin", TOKENS["berlin"], colour=COLOUR)
        )
        await held_by(edge, "origin")
        await nodes_known(origin, 2)
        offer = "v=0\r\n"
        async with http.post(
            f"{root(origin)}/whep/berlin",
            data=offer,
            headers={"Content-Type": "application/sdp", "Authorization": "Bearer x.y.z"},
            allow_redirects=False,
        ) as response:
            assert response.status == 307
            assert "access_token=x.y.z" in response.headers["Location"]
        token = issue(secret, "berlin", 60.0)
        pc = RTCPeerConnection(rtc_config())
        stack.push_async_callback(pc.close)
        for kind in ("video", "audio"):
            pc.addTransceiver(kind, direction="recvonly")
        session = await negotiate(http, f"{root(origin)}/whep/berlin", pc, token)
        assert session.url.startswith(root(edge) + "/whep/berlin/")
        # Without a token, the edge refuses as a single node would.
        with pytest.raises(WebRtcHttpError) as refused:
            bare = RTCPeerConnection(rtc_config())
            stack.push_async_callback(bare.close)
            bare.addTransceiver("video", direction="recvonly")
            await negotiate(http, f"{root(origin)}/whep/berlin", bare)
        assert refused.value.status == 401
