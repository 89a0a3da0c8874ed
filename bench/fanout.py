"""Fan-out benchmark: how a relay's cost grows with viewers and studios, and the baseline.

A *scenario* is one relay process (Meridian, or the aiortc `MediaRelay` baseline),
one publisher process with S studios, and viewers in load processes, ramped up
through the viewer counts N: each step joins the new viewers (spread over the
studios, viewer i watching studio i mod S), lets them warm up, then measures a
steady window. Before any viewer the studios alone are measured, so that the
server's fixed cost (ingest, timers) can be told from the cost per viewer packet.

Per window:

* server CPU time (utime + stime of all its threads, /proc/<pid>/stat): as % of one
  core, per forwarded packet, marginal (less the studios-alone rate), and the slope
  between consecutive steps (the cost of one more viewer packet);
* packets forwarded (`meridian_egress_packets_total`), the stream's own packet rate
  (`meridian_ingest_packets_total` per studio) and so viewers per core at that rate;
* delivery at the viewers from RTP sequence numbers (received / expected, so a
  packet still in flight at a snapshot is not lost), and video frames per second;
* join time (WHEP POST to the first keyframe packet at the viewer) for the step's
  new viewers, and keyframe requests that reached the studios during the joins;
* relay latency (Meridian only, bench/instrumented_server.py): studio send to the
  last viewer's send, per video packet;
* server RSS over the studios-alone RSS, per viewer; kernel UDP drops per side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import procfs, prom
from bench.children import Child, ChildFailed

ROOT = Path(__file__).resolve().parent.parent
TOKEN_ENV = "MERIDIAN_BENCH_TOKEN"
EGRESS = "meridian_egress_packets_total"
EGRESS_BYTES = "meridian_egress_bytes_total"
INGEST = "meridian_ingest_packets_total"
INGEST_BYTES = "meridian_ingest_bytes_total"
DROPPED = "meridian_dropped_packets_total"
NACKS = "meridian_viewer_nacks_total"
KEYFRAME_REQUESTS = "meridian_keyframe_requests_sent_total"
VIEWERS_ENDED = "meridian_viewer_sessions_ended_total"
STUDIOS_ENDED = "meridian_studio_sessions_ended_total"

MERIDIAN = "meridian"
MEDIARELAY = "mediarelay"


@dataclass(frozen=True, slots=True)
class Options:
    duration: float = 15.0  # each steady window, seconds
    warmup: float = 3.0  # after a step's viewers joined, before its window
    studio_only: float = 5.0  # studios alone, before any viewer
    processes: int = 2  # viewer load processes
    bitrate: int = 2_500_000  # video bit/s of the studios' loop
    pacing_factor: float = 2.5  # studios send at most this times the bitrate; 0: unpaced
    pin: bool = True  # server on one CPU, load processes on the others
    keep_logs: bool = False
    profile: float = 0.0  # seconds of py-spy on Meridian after each scenario's last step
    tracemalloc: bool = False  # trace Meridian's Python allocations (slows it: no timings)
    baseline_stop_below: float = 0.9  # MediaRelay: stop once frames delivered fall below


@dataclass(frozen=True, slots=True)
class Scenario:
    relay: str  # MERIDIAN or MEDIARELAY
    studios: int
    viewers: tuple[int, ...]  # ascending

    @property
    def name(self) -> str:
        return f"{self.relay}, {self.studios} studio{'s' if self.studios > 1 else ''}"


@dataclass
class Snapshot:
    t: float
    server_cpu: float  # user + system seconds
    server_system_cpu: float
    server_rss: int
    metrics: dict[str, float]
    viewers: list[list[int]] = field(default_factory=list)  # per viewer, see bench.viewers
    load_cpu: list[float] = field(default_factory=list)  # per viewer process
    publisher: dict[str, Any] = field(default_factory=dict)
    server_udp_drops: int = 0
    load_udp_drops: int = 0
    server_wait: float = 0.0  # seconds runnable but waiting for a CPU
    ended: dict[str, float] = field(default_factory=dict)  # "viewer reason" -> sessions


@dataclass(frozen=True, slots=True)
class Wave:
    """One step's joins."""

    viewers: int
    connected: int
    failed: int
    seconds: float
    join_seconds: list[float]
    connect_seconds: list[float]
    keyframe_wait_seconds: list[float]
    keyframe_requests: int  # PLI/FIR that reached the studios while they joined
    errors: list[str]


@dataclass(frozen=True, slots=True)
class PointResult:
    relay: str
    studios: int
    viewers: int
    connected: int
    failed_joins: int
    window_seconds: float
    # joins of this step's new viewers
    joined: int
    join_wave_seconds: float
    join_p50_ms: float
    join_p95_ms: float
    join_max_ms: float
    connect_p50_ms: float  # WHEP POST to connected (ICE + DTLS)
    connect_p95_ms: float
    keyframe_wait_p50_ms: float  # connected to the first keyframe
    keyframe_wait_p95_ms: float
    keyframe_requests_per_join: float
    # the stream, as the studios sent it (server ingest), per studio
    stream_packets_per_second: float
    stream_payload_mbps: float
    fps: int
    # forwarding
    forwarded_packets_per_second: float
    forwarded_payload_mbps: float
    received_packets_per_second: float
    delivery_ratio: float  # received / expected from sequence numbers, all viewers
    received_over_forwarded: float  # cross-check against the server's counter
    worst_viewer_delivery: float
    viewers_without_packets: int  # connected at the window's start, nothing received in it
    sessions_ended: dict[str, int]  # "viewer <reason>" / "studio <reason>", since last step
    frame_delivery: float  # video frames received per viewer / frames the studio sent
    packets_checked: int
    packets_invalid: int
    receiver_reports_per_second: float  # RTCP RR the viewers sent the relay
    dropped_packets: int
    viewer_nacks: int
    server_keyframe_requests: int
    server_udp_drops: int
    load_udp_drops: int
    # server cost
    server_cpu_percent: float
    server_system_cpu_percent: float
    studio_only_cpu_percent: float
    server_cpu_wait_percent: float  # runnable but waiting for a CPU (other work), % of time
    us_per_packet: float  # all server CPU / forwarded packets
    user_us_per_packet: float  # its user-space part
    system_us_per_packet: float  # its kernel part (sendto, UDP; on loopback also delivery)
    marginal_us_per_packet: float  # (CPU - studios-alone CPU) / forwarded packets
    slope_us_per_packet: float | None  # (CPU - previous CPU) / (fwd - previous fwd)
    viewers_per_core: float
    marginal_viewers_per_core: float
    rss_studio_only_mib: float
    rss_mib: float
    kib_per_viewer: float
    server_threads: int
    # relay latency (Meridian): studio send -> last viewer send, and its fan-out part
    latency_samples: int
    latency_p50_us: float | None
    latency_p99_us: float | None
    latency_p999_us: float | None
    latency_max_us: float | None
    latency_min_us: float | None
    fanout_p50_us: float | None
    fanout_p99_us: float | None
    # the load generators, to judge whether they kept up
    load_process_cpu_percent: list[float]
    publisher_cpu_percent: float
    publisher_packets_per_second: float


@dataclass
class ScenarioResult:
    scenario: Scenario
    points: list[PointResult] = field(default_factory=list)
    stopped: str | None = None  # why the ramp ended early
    profile: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None  # tracemalloc's growth over the studios-alone state


@dataclass
class RunInfo:
    """What does not change between scenarios: the stream as encoded, the load."""

    encoded: dict[str, Any] = field(default_factory=dict)
    load_average_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_average_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def studio_ids(count: int) -> list[str]:
    return [f"bench-{i + 1}" for i in range(count)]


def write_config(directory: Path, port: int, studios: list[str]) -> Path:
    path = directory / "bench.toml"
    blocks = "".join(
        f"""
[[studios]]
id = "{studio}"
name = "Benchmark studio {studio}"
country = "ZZ"
city = "Localhost"
token_env = "{TOKEN_ENV}"
"""
        for studio in studios
    )
    path.write_text(
        f"""# Written by python -m bench; deleted after the run.
log_level = "WARNING"

[server]
host = "127.0.0.1"
port = {port}

[demo]
enabled = false

[limits]
# Every benchmark viewer comes from this host: no per-address rate limit, no pending cap.
rate_per_second = 0
max_pending_sessions = 0
{blocks}"""
    )
    return path


def split(total: int, parts: int) -> list[int]:
    """How many of viewers 0..total-1 each process holds (viewer i is in process i % parts)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def cpu_sets(pin: bool) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """CPUs for the server and for the load processes (None: not pinned)."""
    usable = sorted(os.sched_getaffinity(0))
    if not pin or len(usable) < 2:
        return None, None
    return frozenset(usable[:1]), frozenset(usable[1:])


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: float) -> float:
    return round(value * 1000, 1)


class Ramp:
    """One scenario: its processes, its steps and its measurements."""

    def __init__(self, scenario: Scenario, options: Options, info: RunInfo) -> None:
        self.scenario = scenario
        self.options = options
        self.info = info
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.studios = studio_ids(scenario.studios)
        self.server: Child | None = None
        self.publisher: Child | None = None
        self.load: list[Child] = []
        self.http: aiohttp.ClientSession | None = None
        self._snapshots = 0
        self._joined = [0] * options.processes
        self._last: Snapshot | None = None  # the previous step's end (sessions ended since)

    async def run(self) -> ScenarioResult:
        work = Path(tempfile.mkdtemp(prefix="meridian-bench-"))
        ok = False
        try:
            async with AsyncExitStack() as stack:
                self.http = await stack.enter_async_context(
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
                )
                result = ScenarioResult(self.scenario)
                try:
                    await self._ramp(stack, work, result)
                except ChildFailed as exc:
                    if not result.points:
                        raise
                    # Keep what was measured; say why the ramp ended.
                    result.stopped = f"failed after {result.points[-1].viewers} viewers: {exc}"
                    print(f"  {result.stopped}", file=sys.stderr, flush=True)
                    return result
                ok = True
                return result
        finally:
            if ok and not self.options.keep_logs:
                shutil.rmtree(work, ignore_errors=True)
            else:
                print(f"  logs kept in {work}", file=sys.stderr)

    # -------------------------------------------------------------- processes

    def _server_argv(self, work: Path) -> list[str]:
        python = sys.executable
        if self.scenario.relay == MEDIARELAY:
            return [
                *(python, "-m", "bench.mediarelay_server", "--port", str(self.port)),
                *("--studios", ",".join(self.studios), "--token-env", TOKEN_ENV),
            ]
        config = write_config(work, self.port, self.studios)
        return [
            *(python, "-m", "bench.instrumented_server", "--config", str(config), "--no-demo"),
            *("--port", str(self.port), "--host", "127.0.0.1"),
            *("--log-level", "INFO" if self.options.keep_logs else "WARNING"),
        ]

    async def _ramp(self, stack: AsyncExitStack, work: Path, result: ScenarioResult) -> None:
        opts = self.options
        scenario = self.scenario
        server_cpus, load_cpus = cpu_sets(opts.pin)
        env = {**os.environ, TOKEN_ENV: secrets.token_urlsafe(24), "PYTHONUNBUFFERED": "1"}
        if opts.tracemalloc:
            env["MERIDIAN_BENCH_TRACEMALLOC"] = "1"
        python = sys.executable

        self.server = server = await Child.start(
            "server",
            self._server_argv(work),
            cwd=ROOT,
            log_dir=work,
            env=env,
            json_stdout=False,
            cpus=server_cpus,
        )
        # Cleanups run last-in first-out: viewers, then the studios, then the server.
        stack.push_async_callback(server.stop, 8.0, None)
        await self._wait_http("/healthz", server, 30.0)

        top = max(scenario.viewers)
        steps = len(scenario.viewers)
        # Generous bound: a load process outlives no run, even if this one hangs.
        lifetime = 300 + 2 * top + steps * 3 * (opts.duration + opts.warmup) + opts.profile
        endpoints = [f"{self.base}/whip/{s}" for s in self.studios]
        self.publisher = publisher = await Child.start(
            "publisher",
            [
                *(python, "-m", "bench.publisher", "--endpoints", ",".join(endpoints)),
                *("--token-env", TOKEN_ENV, "--bitrate", str(opts.bitrate)),
                *("--pacing-factor", str(opts.pacing_factor)),
                *("--max-seconds", str(lifetime)),
            ],
            cwd=ROOT,
            log_dir=work,
            env=env,
            cpus=load_cpus,
        )
        stack.push_async_callback(publisher.stop, 8.0)
        encoded = await publisher.expect("encoded", 90.0)
        if not self.info.encoded:
            self.info.encoded = encoded
            print(
                f"  studio loop encoded in {encoded['encode_seconds']:.1f} s: video "
                f"{encoded['video_bitrate'] / 1e6:.2f} Mbit/s (from the packets' sizes), "
                f"Opus {encoded['audio_bitrate'] / 1e3:.0f} kbit/s, "
                f"~{encoded['rtp_packets_per_second_estimate']:.0f} RTP packets/s",
                file=sys.stderr,
                flush=True,
            )
        await publisher.expect("connected", 60.0)
        await self._wait_live(30.0)

        whep = ",".join(f"{self.base}/whep/{s}" for s in self.studios)
        for index in range(opts.processes):
            child = await Child.start(
                f"viewers-{index}",
                [
                    *(python, "-m", "bench.viewers", "--endpoints", whep),
                    *("--processes", str(opts.processes), "--process-index", str(index)),
                    *("--max-seconds", str(lifetime)),
                ],
                cwd=ROOT,
                log_dir=work,
                env=env,
                cpus=load_cpus,
            )
            stack.push_async_callback(child.stop, 20.0)
            self.load.append(child)
        for child in self.load:
            await child.expect("ready", 30.0)

        await asyncio.sleep(2.0)  # let ingest settle (first keyframe, DTLS, rates)
        base_start = await self._snapshot()
        await asyncio.sleep(opts.studio_only)
        base_end = await self._snapshot()
        await self._memory(mark=True)

        previous: PointResult | None = None
        self._last = base_end
        for count in scenario.viewers:
            print(f"  {count} viewers ...", file=sys.stderr, flush=True)
            wave = await self._join(count)
            for error in wave.errors:
                print(f"  join failed: {error}", file=sys.stderr)
            await asyncio.sleep(opts.warmup)
            start = await self._snapshot()
            await self._latency(reset=True)
            await asyncio.sleep(opts.duration)
            latency = await self._latency(reset=False)
            end = await self._snapshot()
            point = self._result(base_start, base_end, start, end, wave, latency, previous)
            self._last = end
            result.points.append(point)
            previous = point
            print(
                f"    {point.forwarded_packets_per_second:.0f} packets/s forwarded, "
                f"server CPU {point.server_cpu_percent:.1f} %, "
                f"{point.us_per_packet:.2f} us/packet, {point.viewers_per_core:.1f} viewers/core, "
                f"delivery {point.delivery_ratio:.4f}, frames {point.frame_delivery:.3f}, "
                f"join p95 {point.join_p95_ms:.0f} ms"
                + (
                    f", latency p99 {point.latency_p99_us / 1000:.2f} ms"
                    if point.latency_p99_us is not None
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )
            if scenario.relay == MEDIARELAY and point.frame_delivery < opts.baseline_stop_below:
                result.stopped = (
                    f"stopped after {count} viewers: {point.frame_delivery:.0%} of the frames "
                    f"reached the viewers (below {opts.baseline_stop_below:.0%}): it cannot "
                    "keep up"
                )
                print(f"  {result.stopped}", file=sys.stderr, flush=True)
                break
        if result.points:
            result.memory = await self._memory(mark=False)
        if opts.profile > 0 and scenario.relay == MERIDIAN:
            result.profile = await self._profile(work, load_cpus)

    async def _join(self, count: int) -> Wave:
        """Join viewers until there are `count`; the studios' keyframe requests meanwhile."""
        targets = split(count, self.options.processes)
        before = await self._publisher_stats()
        started = time.monotonic()
        asked = []
        for child, target, joined in zip(self.load, targets, self._joined, strict=True):
            if target > joined:
                await child.send(f"join {target - joined}")
                asked.append(child)
        timeout = 60.0 + 0.5 * count
        answers = await asyncio.gather(*(c.expect("joined", timeout) for c in asked))
        seconds = time.monotonic() - started
        self._joined = targets
        after = await self._publisher_stats()
        return Wave(
            viewers=sum(int(a["connected"]) + int(a["failed"]) for a in answers),
            connected=sum(int(a["connected"]) for a in answers),
            failed=sum(int(a["failed"]) for a in answers),
            seconds=seconds,
            join_seconds=[t for a in answers for t in a["join_seconds"]],
            connect_seconds=[t for a in answers for t in a["connect_seconds"]],
            keyframe_wait_seconds=[t for a in answers for t in a["keyframe_wait_seconds"]],
            keyframe_requests=int(after["keyframe_requests"] - before["keyframe_requests"]),
            errors=[e for a in answers for e in a.get("errors", [])],
        )

    async def _profile(self, work: Path, cpus: frozenset[int] | None) -> dict[str, Any] | None:
        """py-spy on the server for a window of its own (the measured ones stay unprofiled)."""
        assert self.server is not None
        py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if py_spy is None:
            print("  py-spy not found: no profile", file=sys.stderr)
            return None
        out = work / "profile.txt"
        seconds = self.options.profile
        child = await Child.start(
            "py-spy",
            [
                *(py_spy, "record", "-p", str(self.server.pid), "-d", f"{seconds:.0f}"),
                *("-f", "raw", "-o", str(out), "--nonblocking", "-r", "200"),
            ],
            cwd=ROOT,
            log_dir=work,
            json_stdout=False,
            cpus=cpus,
        )
        start = await self._snapshot()
        await child.wait_exit(seconds + 30.0)
        end = await self._snapshot()
        await child.stop(5.0, None)
        if not out.exists():
            print(f"  py-spy wrote no profile:\n{child.log_tail()}", file=sys.stderr)
            return None
        forwarded = prom.delta(end.metrics, start.metrics, EGRESS)
        cpu = end.server_cpu - start.server_cpu
        return {
            "raw": out.read_text(),
            "seconds": seconds,
            "viewers": max(self.scenario.viewers),
            "studios": self.scenario.studios,
            "us_per_packet": cpu / forwarded * 1e6 if forwarded else float("nan"),
            "server_cpu_percent": cpu / (end.t - start.t) * 100,
        }

    async def _wait_http(self, path: str, server: Child, within: float) -> None:
        assert self.http is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not server.running:
                raise ChildFailed(
                    f"server exited with {server.process.returncode}\n{server.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with self.http.get(self.base + path) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise ChildFailed(
            f"server did not answer {path} within {within:.0f} s\n{server.log_tail()}"
        )

    async def _wait_live(self, within: float) -> None:
        assert self.http is not None
        deadline = time.monotonic() + within
        wanted = set(self.studios)
        while time.monotonic() < deadline:
            async with self.http.get(self.base + "/api/studios") as response:
                listing = (await response.json())["studios"]
            if wanted <= {s["id"] for s in listing if s["live"]}:
                return
            await asyncio.sleep(0.1)
        raise ChildFailed(f"studios {sorted(wanted)} not all live {within:.0f} s after connecting")

    # ------------------------------------------------------------ measurements

    async def _publisher_stats(self) -> dict[str, Any]:
        assert self.publisher is not None
        self._snapshots += 1
        tag = str(self._snapshots)
        await self.publisher.send(f"snapshot {tag}")
        return await self.publisher.expect("stats", 15.0, {"id": tag})

    async def _latency(self, reset: bool) -> dict[str, Any]:
        assert self.http is not None
        if self.scenario.relay != MERIDIAN:
            return {}
        url = self.base + "/bench/latency" + ("?reset=1" if reset else "")
        async with self.http.get(url) as response:
            data: dict[str, Any] = await response.json()
            return data

    async def _memory(self, mark: bool) -> dict[str, Any] | None:
        """tracemalloc's view (with --tracemalloc): mark now, or the growth since the mark."""
        assert self.http is not None
        if not self.options.tracemalloc or self.scenario.relay != MERIDIAN:
            return None
        url = self.base + "/bench/memory" + ("?mark=1" if mark else "?top=30")
        async with self.http.get(url) as response:
            data: dict[str, Any] = await response.json()
        data["viewers"] = sum(self._joined)
        return data

    async def _snapshot(self) -> Snapshot:
        """Everything at (nearly) one instant: ask the children first, read, then collect."""
        assert self.server is not None and self.publisher is not None and self.http is not None
        self._snapshots += 1
        tag = str(self._snapshots)
        for child in [*self.load, self.publisher]:
            await child.send(f"snapshot {tag}")
        t = time.monotonic()
        user, system = procfs.cpu_times(self.server.pid)
        rss = procfs.rss_bytes(self.server.pid)
        async with self.http.get(self.base + "/metrics") as response:
            text = await response.text()
        snapshot = Snapshot(t, user + system, system, rss, prom.sum_by_name(text))
        for who, name in (("viewer", VIEWERS_ENDED), ("studio", STUDIOS_ENDED)):
            for reason, count in prom.by_label(text, name, "reason").items():
                snapshot.ended[f"{who} {reason}"] = count
        snapshot.server_wait = procfs.run_queue_wait(self.server.pid)
        for child in self.load:
            answer = await child.expect("snapshot", 15.0, {"id": tag})
            snapshot.viewers.extend(answer["viewers"])
            snapshot.load_cpu.append(float(answer["cpu_seconds"]))
        snapshot.publisher = await self.publisher.expect("stats", 15.0, {"id": tag})
        snapshot.server_udp_drops = procfs.udp_drops([self.server.pid])
        snapshot.load_udp_drops = procfs.udp_drops([c.pid for c in self.load])
        return snapshot

    def _result(
        self,
        base_start: Snapshot,
        base_end: Snapshot,
        start: Snapshot,
        end: Snapshot,
        wave: Wave,
        latency: dict[str, Any],
        previous: PointResult | None,
    ) -> PointResult:
        scenario = self.scenario
        viewers = max(len(end.viewers), 1)
        seconds = end.t - start.t
        base_seconds = base_end.t - base_start.t
        forwarded = prom.delta(end.metrics, start.metrics, EGRESS)
        ingest = prom.delta(end.metrics, start.metrics, INGEST)
        cpu = end.server_cpu - start.server_cpu
        base_cpu_rate = (base_end.server_cpu - base_start.server_cpu) / base_seconds
        fps = int(self.info.encoded.get("fps", 30))
        # Per viewer: received (video + audio), expected (from sequence numbers), frames.
        received_each, expected_each, frames_each = [], [], []
        checked = invalid = reports = 0
        old = {i: s for i, s in enumerate(start.viewers)}
        for index, e in enumerate(end.viewers):
            s = old.get(index, [0] * len(e))
            received_each.append((e[0] + e[2]) - (s[0] + s[2]))
            frames_each.append(e[4] - s[4])
            expected_each.append(e[5] - s[5])
            checked += e[6] - s[6]
            invalid += e[7] - s[7]
            reports += e[9] - s[9]
        stream_pps = ingest / seconds / scenario.studios
        # A viewer that was there at the start and got nothing shows no sequence numbers:
        # count the whole stream as expected for it, so that silence is not invisible.
        silent = [
            i
            for i, (r, x) in enumerate(zip(received_each, expected_each, strict=True))
            if r == 0 and x == 0 and i < len(start.viewers)
        ]
        for i in silent:
            expected_each[i] = round(stream_pps * seconds)
        received = sum(received_each)
        expected = sum(expected_each)
        cores = cpu / seconds
        frame_delivery = (
            statistics.fmean(frames_each) / (fps * seconds) if frames_each else float("nan")
        )
        us_per_packet = cpu / forwarded * 1e6 if forwarded else float("nan")
        marginal_cpu = cpu - base_cpu_rate * seconds
        marginal_us = marginal_cpu / forwarded * 1e6 if forwarded else float("nan")
        if scenario.relay == MERIDIAN:
            # At the stream's own packet rate: what one core forwards / what a viewer takes.
            per_core = 1e6 / (us_per_packet * stream_pps) if forwarded else 0.0
            marginal_per_core = (
                (1 - base_cpu_rate) * 1e6 / (marginal_us * stream_pps)
                if forwarded and marginal_us > 0
                else 0.0
            )
        else:
            # Decoding and encoding: viewers fully served (frames delivered) per core used.
            per_core = viewers * min(frame_delivery, 1.0) / cores if cores else 0.0
            marginal_cores = cores - base_cpu_rate
            marginal_per_core = (
                (1 - base_cpu_rate) * viewers * min(frame_delivery, 1.0) / marginal_cores
                if marginal_cores > 0
                else 0.0
            )
        slope = None
        if previous is not None:
            previous_cpu = previous.server_cpu_percent / 100
            previous_fwd = previous.forwarded_packets_per_second
            extra = forwarded / seconds - previous_fwd
            if extra > 0:
                slope = round((cores - previous_cpu) / extra * 1e6, 3)
        delivery_each = [
            r / x if x > 0 else 0.0 for r, x in zip(received_each, expected_each, strict=True)
        ]
        joins = wave.join_seconds
        total = latency.get("total_us", {})
        fanout = latency.get("fanout_us", {})
        mib = 1024.0 * 1024.0
        load_seconds = [e - s for s, e in zip(start.load_cpu, end.load_cpu, strict=True)]
        return PointResult(
            relay=scenario.relay,
            studios=scenario.studios,
            viewers=len(end.viewers),
            connected=sum(v[8] for v in end.viewers),
            failed_joins=wave.failed,
            window_seconds=round(seconds, 3),
            joined=wave.viewers,
            join_wave_seconds=round(wave.seconds, 2),
            join_p50_ms=_ms(quantile(joins, 0.5)),
            join_p95_ms=_ms(quantile(joins, 0.95)),
            join_max_ms=_ms(max(joins)) if joins else float("nan"),
            connect_p50_ms=_ms(quantile(wave.connect_seconds, 0.5)),
            connect_p95_ms=_ms(quantile(wave.connect_seconds, 0.95)),
            keyframe_wait_p50_ms=_ms(quantile(wave.keyframe_wait_seconds, 0.5)),
            keyframe_wait_p95_ms=_ms(quantile(wave.keyframe_wait_seconds, 0.95)),
            keyframe_requests_per_join=(
                round(wave.keyframe_requests / wave.viewers, 3) if wave.viewers else 0.0
            ),
            stream_packets_per_second=round(stream_pps, 1),
            stream_payload_mbps=round(
                prom.delta(end.metrics, start.metrics, INGEST_BYTES)
                * 8
                / seconds
                / 1e6
                / scenario.studios,
                3,
            ),
            fps=fps,
            forwarded_packets_per_second=round(forwarded / seconds, 1),
            forwarded_payload_mbps=round(
                prom.delta(end.metrics, start.metrics, EGRESS_BYTES) * 8 / seconds / 1e6, 2
            ),
            received_packets_per_second=round(received / seconds, 1),
            delivery_ratio=round(received / expected, 5) if expected else 0.0,
            received_over_forwarded=round(received / forwarded, 5) if forwarded else 0.0,
            worst_viewer_delivery=round(min(delivery_each), 5) if delivery_each else 0.0,
            viewers_without_packets=len(silent),
            sessions_ended={
                k: round(v - (self._last.ended.get(k, 0.0) if self._last else 0.0))
                for k, v in end.ended.items()
                if v - (self._last.ended.get(k, 0.0) if self._last else 0.0) > 0
            },
            frame_delivery=round(frame_delivery, 4),
            packets_checked=checked,
            packets_invalid=invalid,
            receiver_reports_per_second=round(reports / seconds, 1),
            dropped_packets=round(prom.delta(end.metrics, start.metrics, DROPPED)),
            viewer_nacks=round(prom.delta(end.metrics, start.metrics, NACKS)),
            server_keyframe_requests=round(
                prom.delta(end.metrics, start.metrics, KEYFRAME_REQUESTS)
            ),
            server_udp_drops=end.server_udp_drops - start.server_udp_drops,
            load_udp_drops=end.load_udp_drops - start.load_udp_drops,
            server_cpu_percent=round(cores * 100, 2),
            server_system_cpu_percent=round(
                (end.server_system_cpu - start.server_system_cpu) / seconds * 100, 2
            ),
            studio_only_cpu_percent=round(base_cpu_rate * 100, 2),
            server_cpu_wait_percent=round((end.server_wait - start.server_wait) / seconds * 100, 2),
            us_per_packet=round(us_per_packet, 3),
            user_us_per_packet=round(
                (cpu - (end.server_system_cpu - start.server_system_cpu)) / forwarded * 1e6, 3
            )
            if forwarded
            else float("nan"),
            system_us_per_packet=round(
                (end.server_system_cpu - start.server_system_cpu) / forwarded * 1e6, 3
            )
            if forwarded
            else float("nan"),
            marginal_us_per_packet=round(marginal_us, 3),
            slope_us_per_packet=slope,
            viewers_per_core=round(per_core, 2 if per_core < 10 else 1),
            marginal_viewers_per_core=round(marginal_per_core, 2 if marginal_per_core < 10 else 1),
            rss_studio_only_mib=round(base_end.server_rss / mib, 2),
            rss_mib=round(end.server_rss / mib, 2),
            kib_per_viewer=round((end.server_rss - base_end.server_rss) / 1024 / viewers, 1),
            server_threads=procfs.thread_count(self.server.pid) if self.server else 0,
            latency_samples=int(latency.get("count", 0)),
            latency_p50_us=total.get("p50"),
            latency_p99_us=total.get("p99"),
            latency_p999_us=total.get("p999"),
            latency_max_us=total.get("max"),
            latency_min_us=total.get("min"),
            fanout_p50_us=fanout.get("p50"),
            fanout_p99_us=fanout.get("p99"),
            load_process_cpu_percent=[round(c / seconds * 100, 1) for c in load_seconds],
            publisher_cpu_percent=round(
                (end.publisher["cpu_seconds"] - start.publisher["cpu_seconds"]) / seconds * 100, 1
            ),
            publisher_packets_per_second=round(
                (end.publisher["packets"] - start.publisher["packets"]) / seconds, 1
            ),
        )


async def sweep(
    scenarios: Sequence[Scenario], options: Options
) -> tuple[RunInfo, list[ScenarioResult]]:
    info = RunInfo(load_average_before=procfs.load_average())
    started = time.monotonic()
    results: list[ScenarioResult] = []
    for scenario in scenarios:
        print(f"{scenario.name}: {', '.join(map(str, scenario.viewers))} viewers", file=sys.stderr)
        results.append(await Ramp(scenario, options, info).run())
    info.load_average_after = procfs.load_average()
    info.seconds = round(time.monotonic() - started, 1)
    return info, results
