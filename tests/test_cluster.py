"""A cluster of real processes: an origin, two edges, a real Redis and a real Prometheus.

A studio publishes to the origin; viewers POST to any node and are redirected to an
edge, which pulls the studio from the origin; every viewer decodes the studio's
picture. Then one edge is killed (SIGKILL): its registration expires, its viewers come
back as the watch page would (POST again to any node) and land on the live edge. Then
Redis is killed: nobody is cut, new viewers are still served, and when Redis is back the
nodes register again by themselves. Prometheus sums equal the viewers throughout.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection

from clients.webrtc_client import WebRtcHttpError, negotiate
from tests.cluster_nodes import cluster_env, eventually, registered_nodes, studio_origins
from tests.prometheus_server import Prometheus, running_prometheus
from tests.redis_server import running_redis
from tests.rtc_peers import Viewer, close_to, mean_colour, publishing, rtc_config
from tests.server_process import ServerProcess, free_port, running_server

pytestmark = pytest.mark.timeout(150)

STUDIOS = {"berlin": "berlin-token-0123456789"}
COLOUR = (40, 200, 60)


@asynccontextmanager
async def cluster_node(
    tmp_path: Path, role: str, node_id: str, redis_url: str
) -> AsyncIterator[ServerProcess]:
    port = free_port()
    directory = tmp_path / node_id
    directory.mkdir()
    async with running_server(
        directory, STUDIOS, env=cluster_env(role, node_id, port, redis_url), port=port
    ) as server:
        yield server


@asynccontextmanager
async def viewer_via(http: aiohttp.ClientSession, entry: str) -> AsyncIterator[Viewer]:
    """A viewer that POSTs to `entry` and follows the redirect, as a player does; it
    retries refused connections and 409s for a while (a node just died, a pull starts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20.0
    while True:
        pc = RTCPeerConnection(rtc_config())
        viewer = Viewer(pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack, viewer: Viewer = viewer) -> None:
            viewer.tracks[track.kind] = track

        for kind in ("video", "audio"):
            pc.addTransceiver(kind, direction="recvonly")
        try:
            viewer.session = await negotiate(http, f"{entry}/whep/berlin", pc)
            break
        except (aiohttp.ClientError, OSError, WebRtcHttpError) as exc:
            await pc.close()
            retryable = not isinstance(exc, WebRtcHttpError) or exc.status in (409, 503)
            if not retryable or loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        yield viewer
    finally:
        await pc.close()


def node_of(viewer: Viewer, nodes: dict[str, ServerProcess]) -> str:
    assert viewer.session is not None
    return next(name for name, n in nodes.items() if viewer.session.url.startswith(n.base_url))


async def sees_the_studio(viewer: Viewer, frames: int = 5) -> None:
    decoded = await viewer.frames(frames, within=20.0)
    assert close_to(mean_colour(decoded[-1]), COLOUR), mean_colour(decoded[-1])


async def viewers_total(prometheus: Prometheus, expected: int) -> None:
    """Prometheus' sum over every node equals `expected`, all of them at the edges."""
    await prometheus.wait_for(
        'sum by (country) (meridian_viewers{studio="berlin"})',
        ("country",),
        lambda seen: seen == {("unknown",): float(expected)},
        within=20.0,
    )


async def test_origin_and_edges_survive_an_edge_and_redis_dying(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with AsyncExitStack() as stack:
        redis_server = await stack.enter_async_context(running_redis(tmp_path / "redis"))
        client = redis_server.client()
        stack.push_async_callback(client.aclose)
        nodes = {
            name: await stack.enter_async_context(
                cluster_node(tmp_path, role, name, redis_server.url)
            )
            for name, role in (("origin", "origin"), ("edge1", "edge"), ("edge2", "edge"))
        }
        await eventually(
            lambda: registered_nodes(client), lambda ids: ids == set(nodes), 15.0, "nodes"
        )
        prometheus = await stack.enter_async_context(
            running_prometheus(
                tmp_path / "prometheus",
                [n.base_url.removeprefix("http://") for n in nodes.values()],
                [],
            )
        )
        origin = nodes["origin"]
        await stack.enter_async_context(
            publishing(http, f"{origin.base_url}/whip/berlin", STUDIOS["berlin"], colour=COLOUR)
        )
        await eventually(
            lambda: studio_origins(client),
            lambda held: held == {"berlin": "origin"},
            15.0,
            "the origin's claim of berlin",
        )

        # Viewers POST to any node; each is sent to an edge and sees the studio.
        viewers: list[Viewer] = []
        for entry in ("origin", "edge1", "edge2", "origin"):
            viewer = await stack.enter_async_context(viewer_via(http, nodes[entry].base_url))
            await sees_the_studio(viewer)
            viewers.append(viewer)
        placed = [node_of(v, nodes) for v in viewers]
        assert "origin" not in placed and set(placed) == {"edge1", "edge2"}, placed
        await viewers_total(prometheus, 4)
        # The edges' pulls are not viewers: the origin exports none.
        by_instance = await prometheus.by_labels("sum by (instance) (meridian_viewers)", "instance")
        assert origin.base_url.removeprefix("http://") not in {i for (i,) in by_instance}

        # An edge dies. Its registration expires; its viewers come back through any node.
        dead = nodes["edge1"]
        dead.process.send_signal(signal.SIGKILL)
        dead.process.wait(timeout=10)
        await eventually(
            lambda: registered_nodes(client),
            lambda ids: ids == {"origin", "edge2"},
            10.0,
            "registrations after edge1 died",
        )
        survivors = [v for v, where in zip(viewers, placed, strict=True) if where == "edge2"]
        for viewer, where in zip(viewers, placed, strict=True):
            if where == "edge1":
                await viewer.pc.close()
                viewer = await stack.enter_async_context(viewer_via(http, origin.base_url))
                assert node_of(viewer, nodes) == "edge2"
                await sees_the_studio(viewer)
                survivors.append(viewer)
        await viewers_total(prometheus, 4)

        # Redis dies: nobody is cut, and new viewers are still served.
        redis_server.kill()
        await asyncio.sleep(2.0)  # past the directory's TTL: every node routes on its own
        for viewer in survivors:
            await sees_the_studio(viewer, frames=10)
        for entry in ("origin", "edge2"):
            late = await stack.enter_async_context(viewer_via(http, nodes[entry].base_url))
            await sees_the_studio(late)
        await viewers_total(prometheus, 6)  # the origin serves one itself, as a last resort
        assert "Redis unreachable" in nodes["edge2"].log()

        # Redis is back (empty): the nodes register again and the origin claims its studio.
        await redis_server.start()
        client = redis_server.client()  # the old connection died with the old server
        stack.push_async_callback(client.aclose)
        await eventually(
            lambda: registered_nodes(client),
            lambda ids: ids == {"origin", "edge2"},
            10.0,
            "registrations after Redis came back",
        )
        await eventually(
            lambda: studio_origins(client),
            lambda held: held == {"berlin": "origin"},
            10.0,
            "the claim after Redis came back",
        )
        for viewer in survivors:
            await sees_the_studio(viewer)
