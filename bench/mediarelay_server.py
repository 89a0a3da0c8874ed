"""The baseline: the relay a Python developer would write with aiortc's `MediaRelay`.

`python -m bench.mediarelay_server --port P --studios a,b --token-env NAME`

WHIP in, WHEP out, over aiohttp, relaying the way aiortc's own examples do
(examples/webcam, examples/server): a studio's received tracks go through one
`MediaRelay`, kept consumed by a `MediaBlackhole` so that decoded frames never pile
up while nobody watches, and every viewer gets `relay.subscribe(track)` per kind.
aiortc therefore decodes the studio's H.264 and Opus once and encodes them again
for every viewer, at its own defaults (libx264 with `tune=zerolatency` and the
default preset, starting at 1 Mbit/s; libopus). Nothing here is tuned either way.

For the benchmark it answers what it reads from Meridian: `/healthz`, `/api/studios`
(`live`), and `/metrics` with Meridian's counter names, summed from aiortc's own
statistics (`getStats()`) at scrape time: RTP packets and payload bytes received from
the studios, and sent to the viewers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
from dataclasses import dataclass, field

import uvloop
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaBlackhole, MediaRelay
from aiortc.stats import RTCInboundRtpStreamStats, RTCOutboundRtpStreamStats


@dataclass
class Studio:
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)
    publisher: RTCPeerConnection | None = None
    blackhole: MediaBlackhole | None = None


@dataclass
class Relay:
    token: str
    studios: dict[str, Studio]
    relay: MediaRelay = field(default_factory=MediaRelay)
    viewers: list[RTCPeerConnection] = field(default_factory=list)
    sessions: dict[str, RTCPeerConnection] = field(default_factory=dict)


RELAY = web.AppKey("relay", Relay)


def studio_or_404(request: web.Request) -> tuple[str, Studio]:
    name = request.match_info["studio"]
    studio = request.app[RELAY].studios.get(name)
    if studio is None:
        raise web.HTTPNotFound(text=f"no studio {name!r}")
    return name, studio


def created(relay: Relay, pc: RTCPeerConnection) -> web.Response:
    session = secrets.token_urlsafe(16)
    relay.sessions[session] = pc
    return web.Response(
        status=201,
        text=pc.localDescription.sdp,
        content_type="application/sdp",
        headers={"Location": f"/session/{session}"},
    )


async def whip(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    if request.headers.get("Authorization") != f"Bearer {relay.token}":
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})
    _, studio = studio_or_404(request)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    studio.publisher = pc
    studio.blackhole = MediaBlackhole()

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        studio.tracks[track.kind] = track
        assert studio.blackhole is not None
        studio.blackhole.addTrack(relay.relay.subscribe(track))

    await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    await studio.blackhole.start()
    return created(relay, pc)


async def whep(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    _, studio = studio_or_404(request)
    if not studio.tracks:
        raise web.HTTPConflict(text="studio not live", headers={"Retry-After": "1"})
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in ("video", "audio"):
        track = studio.tracks.get(kind)
        if track is not None:
            pc.addTrack(relay.relay.subscribe(track))
    await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    relay.viewers.append(pc)
    return created(relay, pc)


async def end_session(request: web.Request) -> web.Response:
    pc = request.app[RELAY].sessions.pop(request.match_info["session"], None)
    if pc is None:
        raise web.HTTPNotFound()
    await pc.close()
    return web.Response(status=200)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def studios(request: web.Request) -> web.Response:
    listing = [
        {"id": name, "live": bool(studio.tracks)}
        for name, studio in request.app[RELAY].studios.items()
    ]
    return web.json_response({"studios": listing})


async def metrics(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    # aiortc's inbound statistics count no bytes: the ingest bitrate stays unknown (0).
    totals = dict.fromkeys(("ingest_packets", "ingest_bytes", "egress_packets", "egress_bytes"), 0)
    for studio in relay.studios.values():
        if studio.publisher is not None:
            for stats in (await studio.publisher.getStats()).values():
                if isinstance(stats, RTCInboundRtpStreamStats):
                    totals["ingest_packets"] += stats.packetsReceived
    for pc in relay.viewers:
        for stats in (await pc.getStats()).values():
            if isinstance(stats, RTCOutboundRtpStreamStats):
                totals["egress_packets"] += stats.packetsSent
                totals["egress_bytes"] += stats.bytesSent
    text = "".join(
        f"# TYPE meridian_{name} counter\nmeridian_{name}_total {value}\n"
        for name, value in totals.items()
    )
    return web.Response(text=text, content_type="text/plain")


def create_app(token: str, studio_ids: list[str]) -> web.Application:
    app = web.Application()
    app[RELAY] = Relay(token, {name: Studio() for name in studio_ids})
    app.router.add_post("/whip/{studio}", whip)
    app.router.add_post("/whep/{studio}", whep)
    app.router.add_delete("/session/{session}", end_session)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/studios", studios)
    app.router.add_get("/metrics", metrics)
    app.on_shutdown.append(close_all)
    return app


async def close_all(app: web.Application) -> None:
    relay = app[RELAY]
    pcs = list(relay.sessions.values())
    await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)
    for studio in relay.studios.values():
        if studio.blackhole is not None:
            with contextlib.suppress(Exception):
                await studio.blackhole.stop()


async def serve(host: str, port: int, token: str, studio_ids: list[str]) -> None:
    runner = web.AppRunner(create_app(token, studio_ids), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mediarelay_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--studios", required=True, help="studio ids, comma-separated")
    parser.add_argument("--token-env", required=True, help="environment variable with the token")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    studio_ids = [s for s in args.studios.split(",") if s]
    uvloop.run(serve(args.host, args.port, os.environ[args.token_env], studio_ids))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
