"""The built-in demo studio: a test pattern published to this server over WHIP.

It goes through exactly the path a real studio takes (HTTP, bearer token, ICE,
DTLS, the relay), so a newcomer who runs `make run` sees a live stream at once.
The pattern is encoded once at start-up and replayed, so it costs almost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection

from clients.demo_media import add_loop_tracks, encode_test_loop
from clients.webrtc_client import RemoteSession, WebRtcHttpError, end_session, negotiate
from config.settings import Settings

log = logging.getLogger("meridian.demo")

RETRY_SECONDS = (1.0, 2.0, 5.0)


def demo_endpoint(settings: Settings) -> str:
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{settings.server.port}/whip/{settings.demo.studio_id}"


def start_demo_studio(settings: Settings) -> asyncio.Task[None]:
    return asyncio.ensure_future(publish_forever(settings))


async def publish_forever(settings: Settings) -> None:
    demo = settings.demo
    studio = settings.studio(demo.studio_id)
    if studio is None:
        log.error("demo studio is not configured", extra={"studio": demo.studio_id})
        return
    if settings.cluster.role == "edge":
        return  # studios publish to origins: an edge pulls the demo from its origin
    loop = await asyncio.to_thread(
        encode_test_loop, demo.width, demo.height, demo.fps, demo.loop_seconds
    )
    log.info("demo pattern encoded", extra={"seconds": round(loop.encode_seconds, 3)})
    endpoint = demo_endpoint(settings)
    failures = 0
    async with aiohttp.ClientSession() as http:
        while True:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            add_loop_tracks(pc, loop)
            session: RemoteSession | None = None
            closed = asyncio.Event()

            @pc.on("connectionstatechange")
            def on_state(pc: RTCPeerConnection = pc, closed: asyncio.Event = closed) -> None:
                if pc.connectionState in ("failed", "closed"):
                    closed.set()

            try:
                session = await negotiate(http, endpoint, pc, studio.token)
                failures = 0
                log.info("demo studio publishing", extra={"endpoint": endpoint})
                await closed.wait()
                log.warning("demo studio connection lost; publishing again")
            except (aiohttp.ClientError, WebRtcHttpError, OSError) as exc:
                log.warning("demo studio could not publish", extra={"error": str(exc)})
                failures += 1
            finally:
                if session is not None and pc.connectionState != "closed":
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        await asyncio.shield(end_session(http, session, studio.token))
                await pc.close()
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
