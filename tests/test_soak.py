"""Soak: viewers join and leave all the time while the studio reconnects every 30 s; at the end
Meridian's process holds what it held before, and every gauge equals the truth.

Meridian runs as a real process (`tests/soak_server.py`: run.py plus a SIGUSR1 probe of its
asyncio tasks, open peer connections and sessions); its open files are read from
/proc/<pid>/fd and its memory from /proc/<pid>/status. The test is the studio (an aiortc
publisher whose colour changes with each reconnect, alternately ended with DELETE, taken
over by a second publish, and dropped without a goodbye), a decoding viewer that stays the
whole time and must see each new feed, and up to `MAX_VIEWERS` counting viewers that come
and go (most leave with DELETE, some just close). Before each studio reconnect the churn
pauses and the viewer gauge, the studio list and the audience document must all show
exactly the viewers the test holds. At the end everyone leaves; sessions, peer connections,
tasks, threads and files must be back to the baseline taken after a warm-up; resident memory
within 16 MiB (or 15 %) of it, and level (at most 6 MiB more) from a minute into the soak
to its end, where a leak would keep climbing; and the session counters must match what the
test did. The figures are printed.

`MERIDIAN_SOAK_SECONDS` sets the soak's length (default 120 s in CI; 3600 for an hour);
`MERIDIAN_SOAK_TRACEMALLOC=1` makes the server trace its allocations and the report list
the source lines whose memory grew since the baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import random
import signal
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from clients.audience_load import LightViewer
from clients.webrtc_client import end_session
from tests.metrics_probe import scrape
from tests.rtc_peers import Studio, Viewer, close_to, colour_for, mean_colour, publishing, watching
from tests.server_process import ServerProcess, running_server

SOAK_SECONDS = float(os.environ.get("MERIDIAN_SOAK_SECONDS", "120"))
STUDIO_PERIOD = 30.0
MAX_VIEWERS = 6
CHURN_STEP = 0.4  # seconds between two joins or leaves
TOKEN = "berlin-soak-token-0123456789"
STUDIO = "berlin"
# Memory a long-running Python process may keep after the load is gone (allocator arenas,
# caches that reached their size): what counts as "back to baseline".
RSS_MARGIN_KIB = 16 * 1024
RSS_MARGIN_SHARE = 0.15
RSS_GROWTH_KIB = 6 * 1024


@dataclass
class ProcessState:
    files: int
    rss_kib: int
    tasks: int
    peer_connections: int
    sessions: int
    threads: int
    task_kinds: dict[str, int]
    memory_growth: list[str]

    def describe(self) -> str:
        return (
            f"{self.files} open files, {self.rss_kib / 1024:.1f} MiB resident, "
            f"{self.tasks} tasks, {self.peer_connections} open peer connections, "
            f"{self.sessions} sessions, {self.threads} threads"
        )


def read_state(pid: int, probe: Path) -> ProcessState:
    files = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    inside: dict[str, Any] = json.loads(probe.read_text())
    return ProcessState(
        files,
        rss,
        inside["tasks"],
        inside["peer_connections"],
        inside["sessions"],
        inside["threads"],
        inside["task_kinds"],
        inside["memory_growth"],
    )


async def process_state(server: ServerProcess, probe: Path) -> ProcessState:
    """Ask the server for its probe (SIGUSR1) and read its files and memory from /proc."""
    await asyncio.to_thread(probe.unlink, missing_ok=True)
    server.process.send_signal(signal.SIGUSR1)
    for _ in range(100):
        if await asyncio.to_thread(probe.exists):
            return await asyncio.to_thread(read_state, server.process.pid, probe)
        await asyncio.sleep(0.05)
    raise AssertionError(f"the server wrote no probe:\n{server.log()[-3000:]}")


@dataclass
class Truth:
    """What the test did, to hold the server's counters against."""

    viewer_sessions: int = 0  # WHEP sessions created (201)
    viewers_watched: int = 0  # of those, viewers that received video
    viewers_deleted: int = 0
    viewers_closed: int = 0  # left without DELETE (the peer connection closed)
    refused_offline: int = 0  # 409 while the studio was between two sessions
    join_failures: list[str] = field(default_factory=list)
    studio_sessions: int = 0
    studio_ends: Counter[str] = field(default_factory=Counter)  # how each publish ended
    checkpoints: list[int] = field(default_factory=list)  # viewers at each checkpoint


async def gauges(http: aiohttp.ClientSession, base: str) -> tuple[int, float, int, int]:
    """(viewer gauge, studio_up, viewers in /api/studios, viewers in /api/audience)."""
    samples = await scrape(http, base)
    viewers = sum(
        value
        for labels, value in samples.get("meridian_viewers", {}).items()
        if dict(labels)["studio"] == STUDIO
    )
    up = samples.get("meridian_studio_up", {}).get((("studio", STUDIO),), 0.0)
    async with http.get(base + "/api/studios") as response:
        listed = next(s for s in (await response.json())["studios"] if s["id"] == STUDIO)
    async with http.get(base + "/api/audience") as response:
        audience = await response.json()
    return int(viewers), up, int(listed["viewers"]), int(audience["viewers"])


async def wait_for_gauges(
    http: aiohttp.ClientSession, base: str, viewers: int, up: float, within: float
) -> None:
    expected = (viewers, up, viewers, viewers)
    seen = None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        seen = await gauges(http, base)
        if seen == expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"(viewer gauge, studio_up, /api/studios, /api/audience): expected {expected}, saw {seen}"
    )


class StudioFeed:
    """The studio's current publish, and its reconnects."""

    def __init__(self, http: aiohttp.ClientSession, endpoint: str, truth: Truth) -> None:
        self.http = http
        self.endpoint = endpoint
        self.truth = truth
        self.index = 0
        self.stack: AsyncExitStack | None = None
        self.studio: Studio | None = None

    @property
    def colour(self) -> tuple[int, int, int]:
        return colour_for(self.index)

    async def publish(self) -> tuple[AsyncExitStack, Studio]:
        self.index += 1
        stack = AsyncExitStack()
        studio = await stack.enter_async_context(
            publishing(self.http, self.endpoint, TOKEN, colour=self.colour)
        )
        self.truth.studio_sessions += 1
        async with asyncio.timeout(20):
            while studio.pc.connectionState != "connected":
                if studio.pc.connectionState in ("failed", "closed"):
                    raise AssertionError(f"the studio's publish {studio.pc.connectionState}")
                await asyncio.sleep(0.05)
        return stack, studio

    async def start(self) -> None:
        self.stack, self.studio = await self.publish()

    async def reconnect(self, mode: str) -> None:
        assert self.stack is not None and self.studio is not None
        old_stack, old = self.stack, self.studio
        if mode == "delete":
            assert await end_session(self.http, old.session, TOKEN) == 200
            await old_stack.aclose()
            await asyncio.sleep(1.0)
            self.stack, self.studio = await self.publish()
        elif mode == "take-over":  # the studio comes back before its old session ended
            self.stack, self.studio = await self.publish()
            await asyncio.sleep(1.0)
            await old_stack.aclose()
        else:  # "close": no DELETE, the peer connection closes
            await old_stack.aclose()
            await asyncio.sleep(1.0)
            self.stack, self.studio = await self.publish()
        self.truth.studio_ends[mode] += 1

    async def stop(self) -> None:
        if self.stack is not None and self.studio is not None:
            assert await end_session(self.http, self.studio.session, TOKEN) == 200
            self.truth.studio_ends["delete"] += 1
            await self.stack.aclose()
            self.stack = self.studio = None


class Audience:
    """Counting viewers that join and leave at random, and the truth about them."""

    def __init__(self, http: aiohttp.ClientSession, endpoint: str, truth: Truth) -> None:
        self.http = http
        self.endpoint = endpoint
        self.truth = truth
        self.viewers: list[LightViewer] = []
        self.random = random.Random(20260101)
        self.running = asyncio.Event()
        self.running.set()
        self.idle = asyncio.Event()

    async def join(self) -> None:
        viewer = LightViewer(self.endpoint, {})
        if await viewer.join(self.http, ("video", "audio"), 15.0):
            self.truth.viewer_sessions += 1
            self.viewers.append(viewer)
            return
        await viewer.leave(self.http)
        if viewer.session is not None:  # created, then failed to connect (and deleted)
            self.truth.viewer_sessions += 1
            self.truth.viewers_deleted += 1
            self.truth.join_failures.append(f"created but not connected: {viewer.error}")
        elif viewer.error and "HTTP 409" in viewer.error:
            self.truth.refused_offline += 1
        else:
            self.truth.join_failures.append(str(viewer.error))

    async def leave(self, viewer: LightViewer, *, delete: bool) -> None:
        self.viewers.remove(viewer)
        if viewer.packets["video"]:
            self.truth.viewers_watched += 1
        if delete:
            assert viewer.session is not None
            await viewer.leave(self.http)
            self.truth.viewers_deleted += 1
        else:
            await viewer.pc.close()
            self.truth.viewers_closed += 1

    async def churn(self, until: float) -> None:
        while time.monotonic() < until:
            if not self.running.is_set():
                self.idle.set()
                await self.running.wait()
                self.idle.clear()
            watched = [v for v in self.viewers if v.packets["video"]]
            if len(self.viewers) < MAX_VIEWERS and (not watched or self.random.random() < 0.55):
                await self.join()
            elif watched:
                leaving = self.random.choice(watched)
                await self.leave(leaving, delete=self.random.random() < 0.75)
            await asyncio.sleep(CHURN_STEP)
        self.idle.set()

    async def pause(self) -> None:
        self.running.clear()
        await asyncio.wait_for(self.idle.wait(), 30)

    def resume(self) -> None:
        self.running.set()

    async def all_watching(self, within: float) -> None:
        """Wait until every viewer receives video (bounded); keep those that do not as failures."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if all(v.packets["video"] for v in self.viewers):
                return
            await asyncio.sleep(0.1)
        for viewer in [v for v in self.viewers if not v.packets["video"]]:
            self.truth.join_failures.append("connected but no video within the checkpoint")
            await self.leave(viewer, delete=True)

    async def leave_all(self) -> None:
        for viewer in list(self.viewers):
            await self.leave(viewer, delete=True)


class Picture:
    """What the staying viewer sees: it decodes every frame (aiortc queues frames nobody
    reads, without bound) and samples the picture's colour."""

    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.frames = 0
        self.colour: tuple[int, int, int] | None = None
        self.tasks = [
            asyncio.create_task(self._video()),
            asyncio.create_task(self._drain(viewer.tracks["audio"])),
        ]

    async def _video(self) -> None:
        track = self.viewer.tracks["video"]
        while True:
            frame = await track.recv()
            assert isinstance(frame, VideoFrame)
            if self.frames % 10 == 0:
                self.colour = mean_colour(frame)
            self.frames += 1

    async def _drain(self, track: MediaStreamTrack) -> None:
        while True:
            await track.recv()

    async def sees(self, colour: tuple[int, int, int], within: float) -> None:
        deadline = time.monotonic() + within
        while self.colour is None or not close_to(self.colour, colour):
            if time.monotonic() > deadline:
                raise AssertionError(f"the staying viewer never saw the new feed's {colour}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                await task


async def warm_up(http: aiohttp.ClientSession, base: str, truth: Truth) -> None:
    """One publish, a take-over, two viewers: every code path and cache has run once."""
    feed = StudioFeed(http, base + f"/whip/{STUDIO}", truth)
    await feed.start()
    audience = Audience(http, base + f"/whep/{STUDIO}", truth)
    for _ in range(2):
        await audience.join()
    await audience.all_watching(10)
    await feed.reconnect("take-over")
    await audience.all_watching(10)
    await audience.leave_all()
    await feed.stop()
    await wait_for_gauges(http, base, 0, 0.0, within=20)


def counter_total(
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str
) -> dict[str, float]:
    """A counter's values by `reason` (or all labels) for the studio."""
    totals: dict[str, float] = {}
    for labels, value in samples.get(name, {}).items():
        label = dict(labels)
        if label.get("studio") == STUDIO:
            key = label.get("reason", label.get("country", ""))
            totals[key] = totals.get(key, 0.0) + value
    return totals


async def quiescent(
    http: aiohttp.ClientSession, base: str, server: ServerProcess, probe: Path, within: float
) -> ProcessState:
    """Wait until no viewer, no studio, no session and no open peer connection is left."""
    await wait_for_gauges(http, base, 0, 0.0, within=within)
    state = await process_state(server, probe)
    deadline = time.monotonic() + within
    while (state.sessions or state.peer_connections) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        state = await process_state(server, probe)
    return state


@pytest.mark.timeout(SOAK_SECONDS + 300)
async def test_soak_viewers_churn_studio_reconnects_and_everything_returns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    probe = tmp_path / "probe.json"
    env = {"MERIDIAN_SOAK_PROBE": str(probe), "MERIDIAN_LOG_LEVEL": "WARNING"}
    truth = Truth()
    # A new connection per request: no idle keep-alive socket blurs the file count.
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        running_server(tmp_path, {STUDIO: TOKEN}, script="tests/soak_server.py", env=env) as server,
        aiohttp.ClientSession(connector=connector) as http,
    ):
        base = server.base_url
        await warm_up(http, base, truth)
        before = await quiescent(http, base, server, probe, within=30)
        warm = copy.deepcopy(truth)  # the warm-up's share of the counters

        started = time.monotonic()
        until = started + SOAK_SECONDS
        feed = StudioFeed(http, base + f"/whip/{STUDIO}", truth)
        audience = Audience(http, base + f"/whep/{STUDIO}", truth)
        await feed.start()
        async with watching(http, base + f"/whep/{STUDIO}") as staying:
            truth.viewer_sessions += 1
            await staying.frames(1)
            picture = Picture(staying)
            await picture.sees(feed.colour, within=10)
            churn = asyncio.create_task(audience.churn(until))
            modes = ["delete", "take-over", "close"]
            rss_at_checkpoints: list[int] = []
            try:
                while time.monotonic() + STUDIO_PERIOD < until:
                    await asyncio.sleep(STUDIO_PERIOD - 2)
                    await audience.pause()
                    await audience.all_watching(10)
                    expected = len(audience.viewers) + 1  # and the staying viewer
                    await wait_for_gauges(http, base, expected, 1.0, within=15)
                    truth.checkpoints.append(expected)
                    rss_at_checkpoints.append((await process_state(server, probe)).rss_kib)
                    await feed.reconnect(modes[(len(truth.checkpoints) - 1) % len(modes)])
                    await picture.sees(feed.colour, within=15)
                    audience.resume()
                await asyncio.wait_for(churn, timeout=max(0.0, until - time.monotonic()) + 60)
            finally:
                audience.resume()
                churn.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await churn
                await picture.stop()
            truth.viewers_watched += 1  # the staying viewer, about to leave with DELETE
            truth.viewers_deleted += 1
            await audience.leave_all()
        await feed.stop()
        after = await quiescent(http, base, server, probe, within=60)
        samples = await scrape(http, base)
        soak_seconds = time.monotonic() - started

    ended = counter_total(samples, "meridian_viewer_sessions_ended_total")
    watched = counter_total(samples, "meridian_viewer_sessions_total")
    studio_ended = counter_total(samples, "meridian_studio_sessions_ended_total")
    report = (
        f"\nsoak: {soak_seconds:.0f} s, {truth.studio_sessions - warm.studio_sessions} studio "
        f"publishes ({dict(truth.studio_ends - warm.studio_ends)}), "
        f"{truth.viewer_sessions - warm.viewer_sessions} viewer sessions "
        f"({truth.viewers_deleted - warm.viewers_deleted} deleted, "
        f"{truth.viewers_closed - warm.viewers_closed} closed without DELETE), "
        f"{truth.refused_offline} refused while the studio was away, "
        f"viewers at checkpoints {truth.checkpoints}\n"
        f"server before: {before.describe()}\n"
        f"server after:  {after.describe()}\n"
        f"resident MiB at each checkpoint: {[round(kib / 1024, 1) for kib in rss_at_checkpoints]}\n"
        f"the staying viewer decoded {picture.frames} frames "
        f"({picture.frames / soak_seconds:.1f}/s) through every reconnect\n"
        f"tasks after: {after.task_kinds}\n"
        f"ended: viewers {ended}, studios {studio_ended}; watched {watched}"
    )
    if after.memory_growth:  # MERIDIAN_SOAK_TRACEMALLOC=1
        report += "\nmemory grown since the baseline, by line:\n  " + "\n  ".join(
            after.memory_growth
        )
    with capsys.disabled():
        print(report)

    assert not truth.join_failures, truth.join_failures
    assert len(truth.checkpoints) >= max(1, int(SOAK_SECONDS // STUDIO_PERIOD) - 1), report
    # Nothing is left behind.
    assert after.sessions == 0 and after.peer_connections == 0, report
    assert after.tasks <= before.tasks, report
    assert after.files <= before.files, report
    assert after.threads <= before.threads, report
    assert after.rss_kib <= before.rss_kib + max(
        RSS_MARGIN_KIB, before.rss_kib * RSS_MARGIN_SHARE
    ), report
    # And no growth along the soak: from its second checkpoint (a minute in: packet caches
    # full, the allocator at its working size) to the end, memory stays level.
    settled = rss_at_checkpoints[min(1, len(rss_at_checkpoints) - 1)]
    assert after.rss_kib <= settled + RSS_GROWTH_KIB, report
    # The counters are the truth: every session the test made ended, for the reason it gave.
    assert sum(ended.values()) == truth.viewer_sessions, report
    assert ended.get("deleted", 0) == truth.viewers_deleted, report
    assert sum(watched.values()) == truth.viewers_watched, report
    assert sum(studio_ended.values()) == truth.studio_sessions, report
    assert studio_ended.get("replaced", 0) == truth.studio_ends["take-over"], report
    assert studio_ended.get("deleted", 0) == truth.studio_ends["delete"], report
