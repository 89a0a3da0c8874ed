"""Fan-out benchmark: one Meridian process forwarding one 720p30 stream to N viewers.

For each N: start the server (`run.py`, its own process), one publisher process and
the viewers split over load processes; measure a baseline window with the studio
alone, let the viewers join and warm up, then measure a steady window:

* server CPU time (utime + stime from /proc/<pid>/stat, all threads) over the
  window, as % of one core and in microseconds per forwarded packet;
* packets forwarded per second, from `meridian_egress_packets_total` deltas, and
  cross-checked against what the viewers counted (delivery ratio);
* the stream's own packet rate (`meridian_ingest_packets_total`), hence viewers
  per core at that rate;
* server RSS (VmRSS) before the viewers joined and at the end: memory per viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
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
STUDIO = "bench"
TOKEN_ENV = "MERIDIAN_BENCH_TOKEN"
EGRESS = "meridian_egress_packets_total"
EGRESS_BYTES = "meridian_egress_bytes_total"
INGEST = "meridian_ingest_packets_total"
INGEST_BYTES = "meridian_ingest_bytes_total"
DROPPED = "meridian_dropped_packets_total"
NACKS = "meridian_viewer_nacks_total"
KEYFRAME_REQUESTS = "meridian_keyframe_requests_sent_total"


@dataclass(frozen=True, slots=True)
class Options:
    duration: float = 20.0  # the steady window, seconds
    warmup: float = 5.0  # after the last viewer joined, before the window
    baseline: float = 5.0  # studio alone, before any viewer
    processes: int = 2  # viewer load processes
    bitrate: int = 2_500_000  # video bit/s of the studio's loop
    pin: bool = True  # server on one CPU, load processes on the others
    keep_logs: bool = False


@dataclass
class Snapshot:
    t: float
    server_cpu: float  # user + system seconds
    server_system_cpu: float
    server_rss: int
    metrics: dict[str, float]
    viewers: list[list[int]] = field(default_factory=list)  # per viewer, see bench.viewers
    load_cpu: list[float] = field(default_factory=list)  # per viewer process
    publisher_cpu: float = 0.0
    publisher_packets: int = 0


@dataclass(frozen=True, slots=True)
class PointResult:
    viewers: int
    connected: int
    failed_joins: int
    join_seconds: float
    window_seconds: float
    # the stream, as the studio sent it (server ingest)
    stream_packets_per_second: float
    stream_payload_mbps: float
    # forwarding
    forwarded_packets_per_second: float
    forwarded_payload_mbps: float
    received_packets_per_second: float
    delivery_ratio: float
    worst_viewer_delivery: float  # min over viewers of received / what the studio sent
    viewers_without_packets: int
    dropped_packets: int
    viewer_nacks: int
    keyframe_requests: int
    # server cost
    server_cpu_percent: float
    server_system_cpu_percent: float  # the kernel's part of it (sendto, UDP)
    baseline_cpu_percent: float  # studio alone, no viewers
    us_per_packet: float  # all server CPU / forwarded packets
    marginal_us_per_packet: float  # (CPU - baseline CPU) / forwarded packets
    viewers_per_core: float  # at us_per_packet and the stream's packet rate
    marginal_viewers_per_core: float  # one core minus the baseline, at marginal cost
    rss_before_mib: float
    rss_after_mib: float
    kib_per_viewer: float
    server_threads: int
    # the load generators, to judge whether they kept up
    load_process_cpu_percent: list[float]
    publisher_cpu_percent: float
    publisher_packets_per_second: float


@dataclass
class RunInfo:
    """What does not change between points: the stream as encoded."""

    encoded: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(directory: Path, port: int) -> Path:
    path = directory / "bench.toml"
    path.write_text(
        f"""# Written by python -m bench; deleted after the run.
log_level = "WARNING"

[server]
host = "127.0.0.1"
port = {port}

[demo]
enabled = false

[[studios]]
id = "{STUDIO}"
name = "Benchmark studio"
country = "ZZ"
city = "Localhost"
token_env = "{TOKEN_ENV}"
"""
    )
    return path


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def cpu_sets(pin: bool) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """CPUs for the server and for the load processes (None: not pinned)."""
    usable = sorted(os.sched_getaffinity(0))
    if not pin or len(usable) < 2:
        return None, None
    return frozenset(usable[:1]), frozenset(usable[1:])


class Bench:
    """One point of the sweep: its processes and its measurements."""

    def __init__(self, viewers: int, options: Options, info: RunInfo) -> None:
        self.viewer_count = viewers
        self.options = options
        self.info = info
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server: Child | None = None
        self.publisher: Child | None = None
        self.load: list[Child] = []
        self.http: aiohttp.ClientSession | None = None
        self._snapshots = 0

    # -------------------------------------------------------------- processes

    async def run(self) -> PointResult:
        work = Path(tempfile.mkdtemp(prefix="meridian-bench-"))
        ok = False
        try:
            async with AsyncExitStack() as stack:
                self.http = await stack.enter_async_context(
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
                )
                result = await self._measure(stack, work)
                ok = True
                return result
        finally:
            if ok and not self.options.keep_logs:
                shutil.rmtree(work, ignore_errors=True)
            else:
                print(f"  logs kept in {work}", file=sys.stderr)

    async def _measure(self, stack: AsyncExitStack, work: Path) -> PointResult:
        opts = self.options
        server_cpus, load_cpus = cpu_sets(opts.pin)
        env = {**os.environ, TOKEN_ENV: secrets.token_urlsafe(24), "PYTHONUNBUFFERED": "1"}
        config = write_config(work, self.port)
        python = sys.executable

        self.server = server = await Child.start(
            "server",
            [
                *(python, "run.py", "--config", str(config), "--no-demo"),
                *("--port", str(self.port), "--host", "127.0.0.1", "--log-level", "WARNING"),
            ],
            cwd=ROOT,
            log_dir=work,
            env=env,
            json_stdout=False,
            cpus=server_cpus,
        )
        # Cleanups run last-in first-out: viewers, then the studio, then the server.
        stack.push_async_callback(server.stop, 8.0, None)
        await self._wait_http("/healthz", server, 30.0)

        # Generous bound: a load process outlives no run, even if this one hangs.
        lifetime = 180 + self.viewer_count + 2 * (opts.duration + opts.warmup + opts.baseline)
        self.publisher = publisher = await Child.start(
            "publisher",
            [
                *(python, "-m", "bench.publisher", "--endpoint", f"{self.base}/whip/{STUDIO}"),
                *("--token-env", TOKEN_ENV, "--bitrate", str(opts.bitrate)),
                *("--max-seconds", str(lifetime)),
            ],
            cwd=ROOT,
            log_dir=work,
            env=env,
            cpus=load_cpus,
        )
        stack.push_async_callback(publisher.stop, 8.0)
        self.info.encoded = e = await publisher.expect("encoded", 90.0)
        print(
            f"  studio loop encoded in {e['encode_seconds']:.1f} s: video "
            f"{e['video_bitrate'] / 1e6:.2f} Mbit/s (from the packets' sizes), "
            f"Opus {e['audio_bitrate'] / 1e3:.0f} kbit/s, "
            f"~{e['rtp_packets_per_second_estimate']:.0f} RTP packets/s",
            file=sys.stderr,
            flush=True,
        )
        await publisher.expect("connected", 30.0)
        await self._wait_live(20.0)

        await asyncio.sleep(2.0)  # let ingest settle (first keyframe, DTLS, rates)
        base_start = await self._snapshot()
        await asyncio.sleep(opts.baseline)
        base_end = await self._snapshot()

        joined_at = time.monotonic()
        first = 0
        for index, count in enumerate(split(self.viewer_count, opts.processes)):
            child = await Child.start(
                f"viewers-{index}",
                [
                    *(python, "-m", "bench.viewers", "--endpoint", f"{self.base}/whep/{STUDIO}"),
                    *("--count", str(count), "--first-index", str(first)),
                    *("--max-seconds", str(lifetime)),
                ],
                cwd=ROOT,
                log_dir=work,
                env=env,
                cpus=load_cpus,
            )
            stack.push_async_callback(child.stop, 15.0)
            self.load.append(child)
            first += count
        join_timeout = 60.0 + self.viewer_count
        joins = await asyncio.gather(*(c.expect("joined", join_timeout) for c in self.load))
        join_seconds = time.monotonic() - joined_at
        connected = sum(int(j["connected"]) for j in joins)
        failed = sum(int(j["failed"]) for j in joins)
        for j in joins:
            for error in j.get("errors", []):
                print(f"  join failed: {error}", file=sys.stderr)

        await asyncio.sleep(opts.warmup)
        start = await self._snapshot()
        await asyncio.sleep(opts.duration)
        end = await self._snapshot()
        threads = procfs.thread_count(server.pid)
        return self._result(
            base_start, base_end, start, end, connected, failed, join_seconds, threads
        )

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
        while time.monotonic() < deadline:
            async with self.http.get(self.base + "/api/studios") as response:
                listing = (await response.json())["studios"]
            if any(s["id"] == STUDIO and s["live"] for s in listing):
                return
            await asyncio.sleep(0.1)
        raise ChildFailed(f"studio {STUDIO!r} not live {within:.0f} s after it connected")

    # ------------------------------------------------------------ measurements

    async def _snapshot(self) -> Snapshot:
        """Everything at (nearly) one instant: ask the children first, read, then collect."""
        assert self.server is not None and self.publisher is not None and self.http is not None
        self._snapshots += 1
        tag = str(self._snapshots)
        children = [*self.load, self.publisher]
        for child in children:
            await child.send(f"snapshot {tag}")
        t = time.monotonic()
        user, system = procfs.cpu_times(self.server.pid)
        rss = procfs.rss_bytes(self.server.pid)
        async with self.http.get(self.base + "/metrics") as response:
            metrics = prom.sum_by_name(await response.text())
        snapshot = Snapshot(t, user + system, system, rss, metrics)
        for child in self.load:
            answer = await child.expect("snapshot", 15.0, {"id": tag})
            snapshot.viewers.extend(answer["viewers"])
            snapshot.load_cpu.append(float(answer["cpu_seconds"]))
        stats = await self.publisher.expect("stats", 15.0, {"id": tag})
        snapshot.publisher_cpu = float(stats["cpu_seconds"])
        snapshot.publisher_packets = int(stats["packets"])
        return snapshot

    def _result(
        self,
        base_start: Snapshot,
        base_end: Snapshot,
        start: Snapshot,
        end: Snapshot,
        connected: int,
        failed: int,
        join_seconds: float,
        threads: int,
    ) -> PointResult:
        seconds = end.t - start.t
        base_seconds = base_end.t - base_start.t
        forwarded = prom.delta(end.metrics, start.metrics, EGRESS)
        ingest = prom.delta(end.metrics, start.metrics, INGEST)
        cpu = end.server_cpu - start.server_cpu
        base_cpu_rate = (base_end.server_cpu - base_start.server_cpu) / base_seconds
        received_each = [
            (e[0] + e[2]) - (s[0] + s[2]) for s, e in zip(start.viewers, end.viewers, strict=True)
        ]
        received = sum(received_each)
        stream_pps = ingest / seconds
        us_per_packet = cpu / forwarded * 1e6 if forwarded else float("nan")
        marginal_cpu = cpu - base_cpu_rate * seconds
        marginal_us = marginal_cpu / forwarded * 1e6 if forwarded else float("nan")
        mib = 1024.0 * 1024.0
        return PointResult(
            viewers=self.viewer_count,
            connected=connected,
            failed_joins=failed,
            join_seconds=round(join_seconds, 2),
            window_seconds=round(seconds, 3),
            stream_packets_per_second=round(stream_pps, 1),
            stream_payload_mbps=round(
                prom.delta(end.metrics, start.metrics, INGEST_BYTES) * 8 / seconds / 1e6, 3
            ),
            forwarded_packets_per_second=round(forwarded / seconds, 1),
            forwarded_payload_mbps=round(
                prom.delta(end.metrics, start.metrics, EGRESS_BYTES) * 8 / seconds / 1e6, 2
            ),
            received_packets_per_second=round(received / seconds, 1),
            delivery_ratio=round(received / forwarded, 5) if forwarded else 0.0,
            worst_viewer_delivery=round(min(received_each) / ingest, 5) if ingest else 0.0,
            viewers_without_packets=sum(1 for r in received_each if r == 0),
            dropped_packets=round(prom.delta(end.metrics, start.metrics, DROPPED)),
            viewer_nacks=round(prom.delta(end.metrics, start.metrics, NACKS)),
            keyframe_requests=round(prom.delta(end.metrics, start.metrics, KEYFRAME_REQUESTS)),
            server_cpu_percent=round(cpu / seconds * 100, 2),
            server_system_cpu_percent=round(
                (end.server_system_cpu - start.server_system_cpu) / seconds * 100, 2
            ),
            baseline_cpu_percent=round(base_cpu_rate * 100, 2),
            us_per_packet=round(us_per_packet, 3),
            marginal_us_per_packet=round(marginal_us, 3),
            viewers_per_core=round(1e6 / (us_per_packet * stream_pps), 1) if forwarded else 0.0,
            marginal_viewers_per_core=(
                round((1 - base_cpu_rate) * 1e6 / (marginal_us * stream_pps), 1)
                if forwarded and marginal_us > 0
                else 0.0
            ),
            rss_before_mib=round(base_end.server_rss / mib, 2),
            rss_after_mib=round(end.server_rss / mib, 2),
            kib_per_viewer=round(
                (end.server_rss - base_end.server_rss) / 1024 / self.viewer_count, 1
            ),
            server_threads=threads,
            load_process_cpu_percent=[
                round((e - s) / seconds * 100, 1)
                for s, e in zip(start.load_cpu, end.load_cpu, strict=True)
            ],
            publisher_cpu_percent=round(
                (end.publisher_cpu - start.publisher_cpu) / seconds * 100, 1
            ),
            publisher_packets_per_second=round(
                (end.publisher_packets - start.publisher_packets) / seconds, 1
            ),
        )


async def sweep(counts: Sequence[int], options: Options) -> tuple[RunInfo, list[PointResult]]:
    info = RunInfo()
    results: list[PointResult] = []
    for count in counts:
        print(f"fan-out to {count} viewers ...", file=sys.stderr, flush=True)
        result = await Bench(count, options, info).run()
        print(
            f"  {result.forwarded_packets_per_second:.0f} packets/s forwarded, "
            f"server CPU {result.server_cpu_percent:.1f} %, "
            f"{result.us_per_packet:.2f} us/packet, delivery {result.delivery_ratio:.4f}",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    return info, results
