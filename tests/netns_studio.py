"""An aiortc studio in a process of its own, to be run inside a test's network namespace.

    ip netns exec NS python -m tests.netns_studio --endpoint http://10.203.1.1:PORT/whip/berlin \
        --token TOKEN

It publishes the tests' colour picture and a tone over WHIP (`tests.rtc_peers.publishing`),
and tells the test what happens as JSON lines on stdout: `{"event": "published"}` after the
201, `{"event": "connected"}` once ICE and DTLS are up, and, when the test writes `stop` (or
closes stdin), `{"event": "stats", ...}` with the RTP packets its senders sent, before it
ends its session with DELETE and exits. `{"event": "error", "error": ...}` and exit status 1
say that it failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp

from clients.webrtc_client import end_session
from tests.rtc_peers import publishing

CONNECT_WITHIN = 60.0  # ICE and DTLS over a lossy link with a long round trip


def tell(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def sent_packets(report: Any) -> dict[str, int]:
    """RTP packets sent per kind, from the peer connection's outbound-rtp statistics."""
    sent: dict[str, int] = {}
    for stats in report.values():
        if getattr(stats, "type", "") == "outbound-rtp":
            sent[stats.kind] = sent.get(stats.kind, 0) + int(stats.packetsSent)
    return sent


async def publish(endpoint: str, token: str, colour: tuple[int, int, int]) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        publishing(http, endpoint, token, colour=colour) as studio,
    ):
        tell("published", session=studio.session.url)
        async with asyncio.timeout(CONNECT_WITHIN):
            while studio.pc.connectionState != "connected":
                if studio.pc.connectionState in ("failed", "closed"):
                    raise ConnectionError(f"the connection {studio.pc.connectionState}")
                await asyncio.sleep(0.05)
        tell("connected")
        # Until the test says stop (or goes away and stdin closes).
        await asyncio.to_thread(sys.stdin.readline)
        sent = await sent_packets(await studio.pc.getStats())
        frames = studio.video.frames if studio.video is not None else 0
        tell("stats", packets_sent=sent, frames=frames)
        status = await end_session(http, studio.session, token)
        tell("ended", status=status)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Publish the test picture over WHIP.")
    parser.add_argument("--endpoint", required=True, help="the WHIP endpoint URL")
    parser.add_argument("--token", required=True)
    parser.add_argument("--colour", default="220,40,40", help="R,G,B of the picture")
    args = parser.parse_args(argv)
    r, g, b = (int(part) for part in args.colour.split(","))
    try:
        asyncio.run(publish(args.endpoint, args.token, (r, g, b)))
    except Exception as exc:
        tell("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
