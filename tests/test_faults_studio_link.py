"""A studio on a bad link: 5 % loss and 100 ms delay each way, and viewers still get it all.

The studio runs in a network namespace the test creates (`tests.impaired_link`), so every
packet it sends or receives, the WHIP POST included, crosses the lossy, slow link; Meridian
listens on the link's host end and viewers watch over this host's own addresses. Meridian's
ingest NACKs what the link loses and the studio retransmits it, so the viewers' stream has
no holes: a viewer that counts RTP sequence numbers (and never decodes) must see at least
99 % of the video packets of its window, and a decoding viewer keeps seeing the studio's
picture. The delivered ratio is printed with the link's own count of what it dropped. On such a
link an offer's body also arrives in pieces: the server must read all of it.

Audio is reported but held to less: WebRTC does not retransmit Opus (no `nack` feedback
for audio; aiortc's receiver sends none), so what the link loses of it stays lost and the
player conceals it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtp import RtcpSrPacket, RtpPacket
from prometheus_client import CollectorRegistry

from clients.webrtc_client import end_session, negotiate
from relay import rtc_internals
from server.app import create_app
from tests import sdp_samples
from tests.conftest import TOKENS, make_settings
from tests.impaired_link import ROOT, ImpairedLink, impaired_link
from tests.metrics_probe import scrape
from tests.rtc_peers import close_to, mean_colour, watching

LOSS, DELAY = 0.05, 0.100
MEASURE_SECONDS = 20.0
# Losses in the last moments of the window may still be on their way back (a NACK and its
# retransmission take a round trip of 200 ms and more): packets count if they arrive
# within this many seconds after the window closes.
GRACE_SECONDS = 2.0
REQUIRED_VIDEO_RATIO = 0.99
COLOUR = (50, 70, 220)


@dataclass
class Coverage:
    """How much of an RTP stream's sequence number range a receiver got."""

    expected: int  # sequence numbers from the first received to the window's end
    received: int  # of those, how many arrived (once or more)
    late: int  # arrived after a later sequence number: recovered by a retransmission

    @property
    def ratio(self) -> float:
        return self.received / self.expected if self.expected else 0.0


def coverage(arrivals: list[tuple[float, int]], window_end: float) -> Coverage:
    """Coverage of the sequence numbers from the first arrival to the highest seen by
    `window_end`, counting every arrival (however late) in `arrivals`."""
    if not arrivals:
        return Coverage(0, 0, 0)
    first = arrivals[0][1]
    seen: set[int] = set()
    highest = last_in_window = 0
    late = 0
    for arrived_at, sequence_number in arrivals:
        offset = (sequence_number - first) & 0xFFFF
        if offset >= 0x8000:
            continue  # older than the first packet this receiver got
        if offset < highest and offset not in seen:
            late += 1
        seen.add(offset)
        highest = max(highest, offset)
        if arrived_at <= window_end:
            last_in_window = max(last_in_window, offset)
    received = sum(1 for offset in seen if offset <= last_in_window)
    return Coverage(last_in_window + 1, received, late)


def test_coverage_counts_holes_and_late_arrivals() -> None:
    arrivals = [(0.0, 65534), (0.1, 65535), (0.2, 1), (0.3, 0), (0.4, 3), (5.0, 4), (5.1, 2)]
    # 65534..3 is six numbers, 2 arrived after the window but within the arrivals: all six.
    assert coverage(arrivals, window_end=1.0) == Coverage(6, 6, 2)
    assert coverage(arrivals[:5], window_end=1.0) == Coverage(6, 5, 1)
    assert coverage([], 1.0).ratio == 0.0


@dataclass(eq=False)
class CountingViewer:
    """A WHEP viewer that records each RTP packet's arrival and sequence number, undecoded."""

    pc: RTCPeerConnection = field(
        default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[]))
    )
    arrivals: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    recording: bool = True

    def recorder(self, kind: str) -> Callable[[RtpPacket], None]:
        arrivals = self.arrivals.setdefault(kind, [])

        def record(packet: RtpPacket) -> None:
            if self.recording:
                arrivals.append((time.monotonic(), packet.sequence_number))

        return record


def ignore_report(report: RtcpSrPacket) -> None:
    pass


@asynccontextmanager
async def counting_viewer(
    http: aiohttp.ClientSession, endpoint: str
) -> AsyncIterator[CountingViewer]:
    viewer = CountingViewer()
    for kind in ("video", "audio"):
        transceiver = viewer.pc.addTransceiver(kind, direction="recvonly")
        rtc_internals.tap_receiver(transceiver.receiver, viewer.recorder(kind), ignore_report)
    session = None
    try:
        session = await negotiate(http, endpoint, viewer.pc)
        yield viewer
    finally:
        if session is not None:
            await end_session(http, session)
        await viewer.pc.close()


@dataclass
class StudioProcess:
    process: asyncio.subprocess.Process
    log_path: Path
    events: list[dict[str, Any]] = field(default_factory=list)

    async def expect(self, event: str, within: float) -> dict[str, Any]:
        """Read the studio's JSON lines until `event` (bounded); fail on its error."""
        assert self.process.stdout is not None
        async with asyncio.timeout(within):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise AssertionError(f"the studio exited before {event!r}:\n{self.log()}")
                if not line.startswith(b"{"):
                    continue
                message: dict[str, Any] = json.loads(line)
                self.events.append(message)
                if message["event"] == "error":
                    raise AssertionError(f"the studio failed: {message['error']}\n{self.log()}")
                if message["event"] == event:
                    return message

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@asynccontextmanager
async def studio_in_namespace(
    link: ImpairedLink, endpoint: str, token: str, log_path: Path
) -> AsyncIterator[StudioProcess]:
    colour = ",".join(map(str, COLOUR))
    argv = [sys.executable, "-m", "tests.netns_studio", "--endpoint", endpoint]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *link.command_in_namespace(*argv, "--token", token, "--colour", colour),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    studio = StudioProcess(process, log_path)
    try:
        yield studio
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def wait_live(http: aiohttp.ClientSession, base: str, studio: str, within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            async with http.get(base + "/api/studios") as response:
                listing = (await response.json())["studios"]
            if next(s for s in listing if s["id"] == studio)["live"]:
                return
            await asyncio.sleep(0.1)


def metric_sum(
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str
) -> dict[str, float]:
    """A studio metric's values by kind (summed over other labels)."""
    by_kind: dict[str, float] = {}
    for labels, value in samples.get(name, {}).items():
        kind = dict(labels).get("kind", "")
        by_kind[kind] = by_kind.get(kind, 0.0) + value
    return by_kind


@pytest.mark.timeout(180)
async def test_viewers_get_a_complete_stream_from_a_studio_on_a_lossy_slow_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with impaired_link(loss=LOSS, delay=DELAY) as link:
        server = TestServer(
            create_app(make_settings(), CollectorRegistry()), host=link.host_address
        )
        await server.start_server()
        base = str(server.make_url("")).rstrip("/")
        try:
            async with (
                aiohttp.ClientSession() as http,
                studio_in_namespace(
                    link, base + "/whip/berlin", TOKENS["berlin"], tmp_path / "studio.log"
                ) as studio,
            ):
                await studio.expect("connected", within=60)
                await wait_live(http, base, "berlin", within=15)
                async with (
                    counting_viewer(http, base + "/whep/berlin") as counter,
                    watching(http, base + "/whep/berlin") as decoder,
                ):
                    first = await decoder.frames(1, within=20)
                    started = time.monotonic()
                    decoded = first
                    frames = 0
                    deadline = started + MEASURE_SECONDS
                    while time.monotonic() < deadline:
                        try:
                            decoded = await decoder.frames(1, within=deadline - time.monotonic())
                        except TimeoutError:
                            break
                        frames += 1
                    window_end = time.monotonic()
                    await asyncio.sleep(GRACE_SECONDS)
                    counter.recording = False
                    last_colour = mean_colour(decoded[-1])
                    metrics = await scrape(http, base)
                assert studio.process.stdin is not None
                studio.process.stdin.write(b"stop\n")
                await studio.process.stdin.drain()
                sent = await studio.expect("stats", within=15)
                await studio.expect("ended", within=30)
        finally:
            await server.close()
    video = coverage(counter.arrivals.get("video", []), window_end)
    audio = coverage(counter.arrivals.get("audio", []), window_end)
    decoded_fps = frames / (window_end - started)
    lost = metric_sum(metrics, "meridian_ingest_packets_lost_total")
    nacks = metric_sum(metrics, "meridian_ingest_nacks_sent_total")
    report = (
        f"\nstudio link {link.describe()}\n"
        f"delivered to a viewer over {window_end - started:.0f} s: "
        f"video {video.received}/{video.expected} = {video.ratio:.2%} "
        f"({video.late} recovered late), "
        f"audio {audio.received}/{audio.expected} = {audio.ratio:.2%} (not retransmitted)\n"
        f"relay ingest counters: packets lost {lost}, NACKs sent {nacks}; "
        f"studio sent {sent['packets_sent']}; a decoding viewer saw {decoded_fps:.1f} frames/s"
    )
    with capsys.disabled():
        print(report)
    assert link.up.dropped > 0, "the link dropped nothing: the test would prove nothing"
    assert video.expected > 200, report
    assert video.ratio >= REQUIRED_VIDEO_RATIO, report
    assert audio.ratio >= 1 - 2 * LOSS, report
    assert close_to(last_colour, COLOUR), last_colour
    assert decoded_fps > 15, report


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_an_offer_that_arrives_in_pieces_is_read_whole(
    server: TestServer, framing: str
) -> None:
    """On a lossy link a body arrives in segments, the later ones after retransmissions:
    the server must wait for all of it (here the second half comes 300 ms later)."""
    body = sdp_samples.offer("sendonly").encode()
    first, rest = body[: len(body) // 2], body[len(body) // 2 :]
    head = [
        b"POST /whip/berlin HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Content-Type: application/sdp",
        b"Authorization: Bearer " + TOKENS["berlin"].encode(),
        b"Connection: close",
    ]
    if framing == "chunked":
        head.append(b"Transfer-Encoding: chunked")
        pieces = [
            b"%x\r\n%s\r\n" % (len(first), first),
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest),
        ]
    else:
        head.append(b"Content-Length: %d" % len(body))
        pieces = [first, rest]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + pieces[0])
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(pieces[1])
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest_of_answer = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 201"), answer[:600]
    location = next(
        line.split(b":", 1)[1].strip()
        for line in rest_of_answer.split(b"\r\n")
        if line.lower().startswith(b"location:")
    )
    async with (
        aiohttp.ClientSession() as http,
        http.delete(
            str(server.make_url(location.decode())),
            headers={"Authorization": f"Bearer {TOKENS['berlin']}"},
        ) as ended,
    ):
        assert ended.status == 200
