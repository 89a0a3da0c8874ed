"""Multi-process benchmark: `python -m bench.cluster --edges 1,2 --viewers 100`.

For each number of edge processes E: a Redis server, an origin and E edges started as
`python -m cluster.local` would start them (cluster/local.py's plan), one studio (the
benchmark's 720p30 H.264 loop, bench/publisher.py) publishing to the origin, and the
viewers (bench/viewers.py load processes) all POSTing to the origin, which redirects
each to the least-loaded edge; each edge pulls the studio from the origin once.

Measured over a steady window, per process: CPU time (utime + stime from /proc), and
from each node's /metrics the packets it forwarded (`meridian_egress_packets_total`)
and its viewers (`meridian_viewers`). The figure that scales is the edges' CPU per
viewer packet: with it constant, capacity grows linearly with the edges. Viewers per
edge core = 1 s / (us per viewer packet x stream packets/s); the projected capacity of
E edges at one core each, against E times the one-edge figure, is the scaling
efficiency. The origin's cost (one pull per edge) is shown beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shlex
import shutil
import socket
import sys
import tempfile
import time
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import procfs, prom
from bench.children import Child, ChildFailed
from cluster import local

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
STUDIO = "bench"
TOKEN_ENV = "MERIDIAN_BENCH_TOKEN"
EGRESS = "meridian_egress_packets_total"
INGEST = "meridian_ingest_packets_total"
VIEWERS = "meridian_viewers"
ENDED = "meridian_viewer_sessions_ended_total"


@dataclass(frozen=True, slots=True)
class Options:
    viewers: int = 100
    duration: float = 20.0
    warmup: float = 5.0
    processes: int = 2  # viewer load processes
    bitrate: int = 2_500_000
    pin: bool = True  # each edge on a core of its own where there are enough
    keep_logs: bool = False


@dataclass(frozen=True, slots=True)
class NodeResult:
    name: str
    role: str
    viewers: int
    cpu_percent: float
    forwarded_packets_per_second: float
    # Viewer (and pull) sessions ended on this node during the run, by reason.
    sessions_ended: dict[str, int]


@dataclass(frozen=True, slots=True)
class PointResult:
    edges: int
    viewers: int
    connected: int
    stream_packets_per_second: float
    edge_forwarded_packets_per_second: float
    edge_cpu_percent: float  # summed over the edges
    us_per_viewer_packet: float  # edges' CPU / edges' forwarded packets
    viewers_per_edge_core: float
    projected_capacity: float  # E edges at one core each
    origin_cpu_percent: float
    origin_forwarded_packets_per_second: float  # the pulls
    received_packets_per_second: float
    delivery_ratio: float
    nodes: list[NodeResult]
    load_cpu_percent: list[float]
    publisher_cpu_percent: float


def free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def write_config(directory: Path) -> Path:
    path = directory / "bench.toml"
    path.write_text(
        f"""# Written by python -m bench.cluster; deleted after the run.
log_level = "WARNING"

[demo]
enabled = false

[limits]
# Every benchmark viewer comes from this host: no per-address rate limit, no pending cap.
rate_per_second = 0
max_pending_sessions = 0

[[studios]]
id = "{STUDIO}"
name = "Benchmark studio"
country = "ZZ"
token_env = "{TOKEN_ENV}"
"""
    )
    return path


async def scrape(http: aiohttp.ClientSession, url: str) -> tuple[dict[str, float], str]:
    async with http.get(url + "/metrics") as response:
        text = await response.text()
    return prom.sum_by_name(text), text


async def wait_for(what: str, probe: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.2)
    raise ChildFailed(f"{what}: not within {within:.0f} s")


class ClusterBench:
    def __init__(self, edges: int, options: Options) -> None:
        self.edges = edges
        self.options = options

    async def run(self) -> PointResult:
        work = Path(tempfile.mkdtemp(prefix="meridian-bench-cluster-"))
        try:
            async with AsyncExitStack() as stack:
                http = await stack.enter_async_context(
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
                )
                result = await self._measure(stack, http, work)
        except BaseException:
            print(f"  logs kept in {work}", file=sys.stderr)
            raise
        if self.options.keep_logs:
            print(f"  logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)  # kept above when the run failed
        return result

    async def _measure(
        self, stack: AsyncExitStack, http: aiohttp.ClientSession, work: Path
    ) -> PointResult:
        opts = self.options
        env = {**os.environ, TOKEN_ENV: secrets.token_urlsafe(24), "PYTHONUNBUFFERED": "1"}
        redis_port, *ports = free_ports(self.edges + 2)
        plan = local.plan(
            self.edges,
            ports=ports,
            redis_port=redis_port,
            data_dir=work,
            config=write_config(work),
            pin=opts.pin,
            log_level="WARNING",
            capacity=opts.viewers,  # room for everyone on any edge: load decides
            environ=env,
        )
        redis = await Child.start(
            "redis", plan.redis_argv, cwd=ROOT, log_dir=work, json_stdout=False
        )
        stack.push_async_callback(redis.stop, 5.0, None)
        nodes: dict[str, Child] = {}
        for node in plan.nodes:
            child = await Child.start(
                node.name,
                node.argv,
                cwd=ROOT,
                log_dir=work,
                env=node.env,
                json_stdout=False,
                cpus=node.cpus,
            )
            stack.push_async_callback(child.stop, 8.0, None)
            nodes[node.name] = child
        for node in plan.nodes:
            await wait_for(f"{node.name} healthy", lambda n=node: self._ok(http, n.url), 60.0)
        origin = plan.nodes[0]
        lifetime = 300 + opts.viewers + 2 * (opts.duration + opts.warmup)
        publisher = await Child.start(
            "publisher",
            [
                *(sys.executable, "-m", "bench.publisher"),
                *("--endpoints", f"{origin.url}/whip/{STUDIO}", "--token-env", TOKEN_ENV),
                *("--bitrate", str(opts.bitrate), "--max-seconds", str(lifetime)),
            ],
            cwd=ROOT,
            log_dir=work,
            env=env,
        )
        stack.push_async_callback(publisher.stop, 8.0)
        encoded = await publisher.expect("encoded", 90.0)
        await publisher.expect("connected", 30.0)
        edge_urls = [n.url for n in plan.nodes[1:]]
        await wait_for(
            "the studio's claim seen by every edge",
            lambda: self._claim_seen(http, edge_urls),
            20.0,
        )
        load: list[Child] = []
        for index in range(opts.processes):
            child = await Child.start(
                f"viewers-{index}",
                [
                    *(sys.executable, "-m", "bench.viewers"),
                    *("--endpoints", f"{origin.url}/whep/{STUDIO}"),
                    *("--processes", str(opts.processes), "--process-index", str(index)),
                    *("--max-seconds", str(lifetime)),
                ],
                cwd=ROOT,
                log_dir=work,
                env=env,
            )
            stack.push_async_callback(child.stop, 15.0)
            load.append(child)
        for child in load:
            await child.expect("ready", 60.0)
        shares = [
            opts.viewers // opts.processes + (1 if i < opts.viewers % opts.processes else 0)
            for i in range(opts.processes)
        ]
        for child, share in zip(load, shares, strict=True):
            await child.send(f"join {share}")
        joins = [await c.expect("joined", 120.0 + opts.viewers) for c in load]
        connected = sum(int(j["connected"]) for j in joins)
        for j in joins:
            for error in j.get("errors", []):
                print(f"  join failed: {error}", file=sys.stderr)
        await asyncio.sleep(opts.warmup)
        start = await self._snapshot(http, plan, nodes, load, publisher, "a")
        await asyncio.sleep(opts.duration)
        end = await self._snapshot(http, plan, nodes, load, publisher, "b")
        stream_pps = float(encoded.get("rtp_packets_per_second_estimate", 0.0))
        return self._result(plan, start, end, connected, stream_pps)

    @staticmethod
    async def _ok(http: aiohttp.ClientSession, url: str) -> bool:
        try:
            async with http.get(url + "/healthz") as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError):
            return False

    @staticmethod
    async def _claim_seen(http: aiohttp.ClientSession, urls: list[str]) -> bool:
        for url in urls:
            async with http.get(url + "/api/cluster") as response:
                directory = (await response.json()).get("directory") or {}
            if STUDIO not in directory.get("studios", {}):
                return False
        return True

    async def _snapshot(
        self,
        http: aiohttp.ClientSession,
        plan: local.ClusterPlan,
        nodes: dict[str, Child],
        load: list[Child],
        publisher: Child,
        tag: str,
    ) -> dict[str, Any]:
        for child in [*load, publisher]:
            await child.send(f"snapshot {tag}")
        snap: dict[str, Any] = {"t": time.monotonic(), "nodes": {}}
        for node in plan.nodes:
            metrics, text = await scrape(http, node.url)
            snap["nodes"][node.name] = {
                "cpu": procfs.cpu_seconds(nodes[node.name].pid),
                "metrics": metrics,
                "ended": prom.by_label(text, ENDED, "reason"),
            }
        snap["load"] = [await c.expect("snapshot", 15.0, {"id": tag}) for c in load]
        snap["publisher"] = await publisher.expect("stats", 15.0, {"id": tag})
        return snap

    def _result(
        self,
        plan: local.ClusterPlan,
        start: dict[str, Any],
        end: dict[str, Any],
        connected: int,
        stream_pps: float,
    ) -> PointResult:
        seconds = end["t"] - start["t"]
        per_node: list[NodeResult] = []
        for node in plan.nodes:
            a, b = start["nodes"][node.name], end["nodes"][node.name]
            per_node.append(
                NodeResult(
                    name=node.name,
                    role=node.role,
                    viewers=round(b["metrics"].get(VIEWERS, 0.0)),
                    cpu_percent=round((b["cpu"] - a["cpu"]) / seconds * 100, 2),
                    forwarded_packets_per_second=round(
                        prom.delta(b["metrics"], a["metrics"], EGRESS) / seconds, 1
                    ),
                    sessions_ended={k: round(v) for k, v in b["ended"].items()},
                )
            )
        origin, edges = per_node[0], per_node[1:]
        ingest = prom.delta(
            end["nodes"][origin.name]["metrics"], start["nodes"][origin.name]["metrics"], INGEST
        )
        stream_pps = ingest / seconds if ingest else stream_pps
        edge_pps = sum(e.forwarded_packets_per_second for e in edges)
        edge_cpu = sum(e.cpu_percent for e in edges)
        us = edge_cpu / 100 / edge_pps * 1e6 if edge_pps else float("nan")
        per_core = 1e6 / (us * stream_pps) if edge_pps and stream_pps else 0.0
        received = 0
        for a, b in zip(start["load"], end["load"], strict=True):
            for before, after in zip(a["viewers"], b["viewers"], strict=False):
                received += (after[0] + after[2]) - (before[0] + before[2])
        return PointResult(
            edges=self.edges,
            viewers=self.options.viewers,
            connected=connected,
            stream_packets_per_second=round(stream_pps, 1),
            edge_forwarded_packets_per_second=round(edge_pps, 1),
            edge_cpu_percent=round(edge_cpu, 2),
            us_per_viewer_packet=round(us, 3),
            viewers_per_edge_core=round(per_core, 1),
            projected_capacity=round(per_core * self.edges, 1),
            origin_cpu_percent=origin.cpu_percent,
            origin_forwarded_packets_per_second=origin.forwarded_packets_per_second,
            received_packets_per_second=round(received / seconds, 1),
            delivery_ratio=round(received / (edge_pps * seconds), 5) if edge_pps else 0.0,
            nodes=per_node,
            load_cpu_percent=[
                round((b["cpu_seconds"] - a["cpu_seconds"]) / seconds * 100, 1)
                for a, b in zip(start["load"], end["load"], strict=True)
            ],
            publisher_cpu_percent=round(
                (end["publisher"]["cpu_seconds"] - start["publisher"]["cpu_seconds"])
                / seconds
                * 100,
                1,
            ),
        )


def markdown(
    command: str, machine: procfs.Machine, options: Options, results: list[PointResult]
) -> str:
    base = results[0].viewers_per_edge_core if results else 0.0
    lines = [
        "# Meridian cluster benchmark: viewers against edge processes",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine.describe()}",
        (
            f"- Method: a Redis server, an origin and E edge processes (cluster/local.py), one "
            f"studio ({options.bitrate / 1e6:.1f} Mbit/s 720p30 H.264 + Opus loop) publishing "
            f"to the origin, {options.viewers} viewers in {options.processes} load processes "
            "POSTing to the origin and redirected to the least-loaded edge; "
            f"{options.duration:.0f} s steady window after {options.warmup:.0f} s of warm-up. "
            "CPU is each process's utime+stime; packets are `meridian_egress_packets_total` "
            "deltas per node."
        ),
        "",
        "| edges | viewers (per edge) | stream pkt/s | viewer pkt/s forwarded | edges' CPU "
        "| us per viewer packet | viewers per edge core | capacity, E cores | vs linear "
        "| origin CPU (E pulls) | delivery |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        split = " + ".join(str(n.viewers) for n in r.nodes[1:])
        linear = r.projected_capacity / (r.edges * base) if base else 0.0
        lines.append(
            f"| {r.edges} | {r.connected} ({split}) | {r.stream_packets_per_second:.0f} "
            f"| {r.edge_forwarded_packets_per_second:.0f} | {r.edge_cpu_percent:.1f} % "
            f"| {r.us_per_viewer_packet:.2f} | {r.viewers_per_edge_core:.0f} "
            f"| {r.projected_capacity:.0f} | {linear:.2f} "
            f"| {r.origin_cpu_percent:.1f} % | {r.delivery_ratio:.4f} |"
        )
    lines += [
        "",
        "| edges | per node: CPU, forwarded pkt/s | load processes CPU | publisher CPU |",
        "|---:|---|---|---:|",
    ]
    for r in results:
        per = "; ".join(
            f"{n.name} {n.cpu_percent:.1f} %, {n.forwarded_packets_per_second:.0f}"
            + (f" (ended: {ended})" if (ended := _ended(n.sessions_ended)) else "")
            for n in r.nodes
        )
        load = " + ".join(f"{c:.0f} %" for c in r.load_cpu_percent)
        lines.append(f"| {r.edges} | {per} | {load} | {r.publisher_cpu_percent:.0f} % |")
    return "\n".join(lines) + "\n"


def _ended(reasons: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()) if count)


def counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("values must be positive")
    return values


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--edges", type=counts, default=[1, 2], help="edge counts (1,2)")
    parser.add_argument("--viewers", type=int, default=100, help="viewers at every point")
    parser.add_argument("--duration", type=float, default=20.0, help="steady window, s")
    parser.add_argument("--warmup", type=float, default=5.0, help="after joins, s")
    parser.add_argument("--processes", type=int, default=2, help="viewer load processes")
    parser.add_argument("--bitrate", type=int, default=2_500_000, help="video bit/s")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="pin no CPU")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument("--no-save", dest="save", action="store_false", help="print only")
    return parser.parse_args(argv)


async def sweep(edge_counts: list[int], options: Options) -> list[PointResult]:
    results = []
    for edges in edge_counts:
        print(f"{edges} edge(s), {options.viewers} viewers ...", file=sys.stderr, flush=True)
        result = await ClusterBench(edges, options).run()
        print(
            f"  {result.connected} viewers, {result.us_per_viewer_packet:.2f} us per viewer "
            f"packet, {result.viewers_per_edge_core:.0f} viewers per edge core",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    return results


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    options = Options(
        viewers=args.viewers,
        duration=args.duration,
        warmup=args.warmup,
        processes=args.processes,
        bitrate=args.bitrate,
        pin=args.pin,
        keep_logs=args.keep_logs,
    )
    command = shlex.join(["python", "-m", "bench.cluster", *argv])
    machine = procfs.machine()
    try:
        results = asyncio.run(sweep(args.edges, options))
    except KeyboardInterrupt:
        print("interrupted; every process it started was ended", file=sys.stderr)
        return 130
    table = markdown(command, machine, options, results)
    print(table)
    if args.save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = machine.date.replace(":", "").replace("-", "").replace("+0000", "Z")
        path = RESULTS_DIR / f"cluster-{stamp}.json"
        record = {
            "benchmark": "cluster",
            "command": command,
            "machine": asdict(machine),
            "options": asdict(options),
            "results": [asdict(r) for r in results],
        }
        path.write_text(json.dumps(record, indent=2) + "\n")
        (RESULTS_DIR / "cluster-latest.md").write_text(table)
        print(f"wrote {path} and {RESULTS_DIR / 'cluster-latest.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
