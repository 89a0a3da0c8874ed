"""A few hundred WHEP viewers from many countries, so the dashboard can be seen alive.

    MERIDIAN_GEO__TRUSTED_PROXIES=127.0.0.1/32 python run.py        # the relay, trusting us
    python -m clients.audience_load --url http://127.0.0.1:8080 --viewers 300

Each viewer is a real WebRTC peer (aiortc: ICE, DTLS, SRTP, RTCP receiver reports and
NACKs) that negotiates over WHEP exactly as a player would, but never decodes: its
receivers hand packets to a counter (`relay.rtc_internals.tap_receiver`), so one process
holds hundreds of viewers. A viewer tells its country the way a CDN in front of Meridian
would, with a country header (`CF-IPCountry`, default) or, with `--forwarded`, an
`X-Forwarded-For` address registered in that country; Meridian believes either only from
a trusted proxy, hence `geo.trusted_proxies` above. Countries are drawn with weights
that look like a worldwide event; studios are spread over the ones given (default: every
live studio). Viewers arrive over `--ramp` seconds, stay `--duration` seconds (some leave
and are replaced all along, with `--churn`), then leave with a DELETE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtcpSrPacket, RtpPacket

from clients.webrtc_client import RemoteSession, WebRtcHttpError, end_session
from relay import rtc_internals

# (country, weight, an address registered there): the embedded table places each address
# in its country, so `--forwarded` exercises the whole X-Forwarded-For path.
COUNTRIES: tuple[tuple[str, int, str], ...] = (
    ("DE", 90, "81.169.145.150"),
    ("FR", 70, "62.4.0.1"),
    ("EG", 60, "41.32.0.1"),
    ("ID", 60, "36.64.0.1"),
    ("CN", 55, "1.80.0.1"),
    ("PE", 40, "200.48.0.1"),
    ("AR", 45, "181.0.0.1"),
    ("UZ", 35, "84.54.64.1"),
    ("US", 80, "8.8.8.8"),
    ("BR", 50, "177.0.0.1"),
    ("JP", 40, "133.242.0.1"),
    ("IN", 50, "117.192.0.1"),
    ("GB", 40, "81.2.69.142"),
    ("IT", 30, "2.32.0.1"),
    ("ES", 30, "80.58.0.1"),
    ("NL", 20, "145.97.0.1"),
    ("PL", 20, "83.0.0.1"),
    ("TR", 20, "85.96.0.1"),
    ("MX", 25, "187.188.0.1"),
    ("CA", 20, "24.48.0.1"),
    ("AU", 15, "1.1.1.1"),
    ("KE", 10, "41.90.0.1"),
    ("NG", 15, "105.112.0.1"),
    ("ZA", 12, "41.0.0.1"),
    ("KR", 15, "1.11.0.1"),
    ("VN", 12, "14.160.0.1"),
    ("TH", 10, "1.0.128.1"),
    ("SA", 10, "2.88.0.1"),
    ("MA", 10, "41.140.0.1"),
    ("CL", 10, "190.96.0.1"),
    ("CO", 12, "181.48.0.1"),
    ("KZ", 8, "2.132.0.1"),
    ("UA", 10, "176.36.0.1"),
    ("SE", 8, "78.64.0.1"),
    ("NO", 6, "84.208.0.1"),
    ("FI", 5, "84.248.0.1"),
    ("PT", 8, "85.240.0.1"),
    ("GR", 6, "79.128.0.1"),
    ("NZ", 4, "121.72.0.1"),
    ("SG", 6, "8.128.0.1"),
)
COUNTRY_HEADER = "CF-IPCountry"


@dataclass(eq=False)
class LightViewer:
    """A WHEP viewer that receives and counts, but never decodes."""

    endpoint: str
    headers: Mapping[str, str]
    country: str = ""  # where it says it is (for the load's report)
    pc: RTCPeerConnection = field(
        default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[]))
    )
    session: RemoteSession | None = None
    packets: Counter[str] = field(default_factory=Counter)
    error: str | None = None

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    async def join(
        self, http: aiohttp.ClientSession, kinds: tuple[str, ...], within: float
    ) -> bool:
        """Negotiate and wait until ICE and DTLS are up; False (with `error`) if not."""
        for kind in kinds:
            transceiver = self.pc.addTransceiver(kind, direction="recvonly")
            rtc_internals.tap_receiver(transceiver.receiver, self._counter(kind), _ignore)
        try:
            async with asyncio.timeout(within):
                self.session = await self._negotiate(http)
                while not self.connected:
                    if self.pc.connectionState in ("failed", "closed"):
                        raise ConnectionError(f"connection {self.pc.connectionState}")
                    await asyncio.sleep(0.05)
            return True
        except TimeoutError:
            self.error = f"not connected within {within:.0f} s ({self.pc.connectionState})"
        except (aiohttp.ClientError, WebRtcHttpError, ConnectionError, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        return False

    async def leave(self, http: aiohttp.ClientSession) -> None:
        if self.session is not None and self.pc.connectionState != "closed":
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                await asyncio.wait_for(end_session(http, self.session), 5.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pc.close(), 5.0)

    async def _negotiate(self, http: aiohttp.ClientSession) -> RemoteSession:
        """clients.webrtc_client.negotiate, with this viewer's headers on the POST."""
        pc = self.pc
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp", **self.headers}
        async with http.post(self.endpoint, data=pc.localDescription.sdp, headers=headers) as r:
            body = await r.text()
            if r.status != 201:
                raise WebRtcHttpError(r.status, body, dict(r.headers))
            session = RemoteSession(
                urljoin(str(r.url), r.headers["Location"]), r.headers.get("ETag"), body
            )
        await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        return session

    def _counter(self, kind: str) -> Callable[[RtpPacket], None]:
        def count(_: RtpPacket) -> None:
            self.packets[kind] += 1

        return count


def _ignore(_: RtcpSrPacket) -> None:
    pass


def country_headers(country: str, address: str, forwarded: bool) -> dict[str, str]:
    return {"X-Forwarded-For": address} if forwarded else {COUNTRY_HEADER: country}


@asynccontextmanager
async def light_viewer(
    http: aiohttp.ClientSession,
    endpoint: str,
    headers: Mapping[str, str],
    *,
    kinds: tuple[str, ...] = ("video", "audio"),
    within: float = 15.0,
) -> AsyncIterator[LightViewer]:
    """One connected viewer for as long as the block runs (raises if it cannot join)."""
    viewer = LightViewer(endpoint, headers)
    try:
        if not await viewer.join(http, kinds, within):
            raise ConnectionError(f"viewer of {endpoint} did not join: {viewer.error}")
        yield viewer
    finally:
        await viewer.leave(http)


# ----------------------------------------------------------------------------- the load


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m clients.audience_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="Meridian's base URL")
    parser.add_argument("--viewers", type=int, default=300, help="viewers at once")
    parser.add_argument("--studios", help="comma-separated studio ids (default: all live)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds to keep watching")
    parser.add_argument("--ramp", type=float, default=30.0, help="seconds over which to arrive")
    parser.add_argument(
        "--churn", type=float, default=0.02, help="share of viewers replaced every second"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="negotiations at once")
    parser.add_argument("--kinds", default="video", help="media kinds to receive (video,audio)")
    parser.add_argument(
        "--forwarded",
        action="store_true",
        help="send X-Forwarded-For with an address in the country, not a country header",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (repeatable runs)")
    return parser.parse_args(argv)


async def live_studios(http: aiohttp.ClientSession, base: str) -> list[str]:
    async with http.get(f"{base}/api/studios") as response:
        response.raise_for_status()
        listing = (await response.json())["studios"]
    return [studio["id"] for studio in listing if studio["live"]]


class Load:
    def __init__(self, args: argparse.Namespace, studios: list[str]) -> None:
        self.args = args
        self.base = args.url.rstrip("/")
        self.studios = studios
        self.kinds = tuple(kind.strip() for kind in args.kinds.split(",") if kind.strip())
        self.random = random.Random(args.seed)
        self.viewers: set[LightViewer] = set()
        self.failures: Counter[str] = Counter()
        self.joined = 0
        self.gate = asyncio.Semaphore(args.concurrency)

    def pick(self) -> tuple[str, str, str]:
        country, _, address = self.random.choices(
            COUNTRIES, weights=[weight for _, weight, _ in COUNTRIES]
        )[0]
        return self.random.choice(self.studios), country, address

    async def add_one(self, http: aiohttp.ClientSession) -> None:
        studio, country, address = self.pick()
        viewer = LightViewer(
            f"{self.base}/whep/{studio}",
            country_headers(country, address, self.args.forwarded),
            country,
        )
        async with self.gate:
            ok = await viewer.join(http, self.kinds, 20.0)
        if ok:
            self.viewers.add(viewer)
            self.joined += 1
        else:
            self.failures[viewer.error or "?"] += 1
            await viewer.leave(http)

    async def remove_one(self, http: aiohttp.ClientSession) -> None:
        if self.viewers:
            viewer = self.random.choice(sorted(self.viewers, key=id))
            self.viewers.discard(viewer)
            await viewer.leave(http)

    async def run(self, http: aiohttp.ClientSession) -> None:
        args = self.args
        started = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        for index in range(args.viewers):
            at = started + args.ramp * index / max(1, args.viewers)
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            task = asyncio.create_task(self.add_one(http))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)
        self.report(started)
        deadline = started + args.ramp + args.duration
        last_report = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            for _ in range(round(len(self.viewers) * args.churn)):
                await self.remove_one(http)
                task = asyncio.create_task(self.add_one(http))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if time.monotonic() - last_report >= 10:
                self.report(started)
                last_report = time.monotonic()
        if pending:
            await asyncio.wait(pending)

    def report(self, started: float) -> None:
        watching = Counter(viewer.country for viewer in self.viewers)
        top = ", ".join(f"{country} {count}" for country, count in watching.most_common(6))
        print(
            f"[{time.monotonic() - started:6.1f} s] {len(self.viewers)} watching "
            f"({self.joined} joined, {sum(self.failures.values())} failed): {top}",
            flush=True,
        )
        for error, count in self.failures.most_common(3):
            print(f"    {count} x {error}", flush=True)

    async def close(self, http: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(viewer.leave(http) for viewer in self.viewers))
        self.viewers.clear()


async def run(args: argparse.Namespace) -> int:
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        base = args.url.rstrip("/")
        studios = (
            [s.strip() for s in args.studios.split(",") if s.strip()]
            if args.studios
            else await live_studios(http, base)
        )
        if not studios:
            print(f"no live studio at {base} (see /api/studios)", file=sys.stderr)
            return 1
        load = Load(args, studios)
        try:
            await load.run(http)
        finally:
            await load.close(http)
        return 0 if load.joined else 1


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
