"""A cluster on one machine: `python -m cluster.local --edges N` (or `make cluster EDGES=N`).

Starts a Redis server (a temporary directory, nothing saved), one origin on `--port`
(studios publish here; the demo studio too, unless the configuration disables it) and
N edge processes on the ports after it, each pinned to a core of its own where there are
enough (one Python process uses one core). Viewers may POST to any of them: they are
sent to the least-loaded edge, which pulls the studio from the origin. Ctrl-C (or
SIGTERM) ends every process it started.

The nodes take the same configuration file as a single node; the cluster settings come
from the environment (`MERIDIAN_CLUSTER__*`, see meridian.toml's [cluster]), exactly as
they would on separate machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
TOKEN_KEYS = ("token", "token_env", "token_file")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class NodePlan:
    """One node of the local cluster: how to start it."""

    name: str
    role: str
    port: int
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cpus: frozenset[int] | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class ClusterPlan:
    redis_argv: tuple[str, ...]
    redis_url: str
    nodes: list[NodePlan] = field(default_factory=list)


def cpu_for(index: int, pin: bool) -> frozenset[int] | None:
    """Node `index` (0: the origin) on a core of its own, round robin when there are fewer."""
    usable = sorted(os.sched_getaffinity(0))
    if not pin or len(usable) < 2:
        return None
    return frozenset({usable[index % len(usable)]})


def config_has_token(config: Path | None) -> bool:
    if config is None:
        return False
    with config.open("rb") as file:
        cluster = tomllib.load(file).get("cluster", {})
    return isinstance(cluster, dict) and any(key in cluster for key in TOKEN_KEYS)


def plan(
    edges: int,
    *,
    ports: Sequence[int],
    redis_port: int,
    data_dir: Path,
    config: Path | None = None,
    host: str = "127.0.0.1",
    public_host: str = "127.0.0.1",
    pin: bool = True,
    log_level: str | None = None,
    capacity: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClusterPlan:
    """The processes of an origin and `edges` edges (on `ports`, the origin's first)."""
    if len(ports) != edges + 1:
        raise ValueError(f"{edges} edges and an origin need {edges + 1} ports, got {len(ports)}")
    environ = dict(os.environ if environ is None else environ)
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    common = {"MERIDIAN_CLUSTER__REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    has_token = config_has_token(config) or any(
        f"MERIDIAN_CLUSTER__{key.upper()}" in environ for key in TOKEN_KEYS
    )
    if not has_token:
        common["MERIDIAN_CLUSTER__TOKEN"] = secrets.token_urlsafe(32)
    if capacity is not None:
        common["MERIDIAN_CLUSTER__CAPACITY"] = str(capacity)
    result = ClusterPlan(
        redis_argv=(
            redis_server,
            *("--port", str(redis_port), "--bind", "127.0.0.1"),
            *("--dir", str(data_dir), "--save", "", "--appendonly", "no"),
            *("--loglevel", "warning"),
        ),
        redis_url=redis_url,
    )
    roles = [("origin", "origin")] + [(f"edge{i}", "edge") for i in range(1, edges + 1)]
    for index, ((name, role), node_port) in enumerate(zip(roles, ports, strict=True)):
        argv = [sys.executable, str(ROOT / "run.py"), "--host", host, "--port", str(node_port)]
        if config is not None:
            argv += ["--config", str(config)]
        if log_level is not None:
            argv += ["--log-level", log_level]
        env = {
            **environ,
            **common,
            "MERIDIAN_CLUSTER__ROLE": role,
            "MERIDIAN_CLUSTER__NODE_ID": name,
            "MERIDIAN_CLUSTER__PUBLIC_URL": f"http://{public_host}:{node_port}",
        }
        result.nodes.append(NodePlan(name, role, node_port, tuple(argv), env, cpu_for(index, pin)))
    return result


def child_setup(cpus: frozenset[int] | None) -> Callable[[], None]:
    """Between fork and exec: die with this launcher; pin to `cpus`."""
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


def spawn(
    argv: Sequence[str], env: Mapping[str, str] | None, cpus: frozenset[int] | None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(argv),
        cwd=ROOT,
        env=None if env is None else dict(env),
        start_new_session=True,  # Ctrl-C reaches the launcher, which ends them in order
        preexec_fn=child_setup(cpus),
    )


async def wait_healthy(url: str, process: subprocess.Popen[bytes], within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while loop.time() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url}: exited with {process.returncode} at start-up")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url + "/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer /healthz within {within:.0f} s")


def stop_all(processes: Sequence[subprocess.Popen[bytes]], grace: float = 8.0) -> None:
    """SIGTERM (nodes end their sessions), then SIGKILL what is still there."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.local", description=__doc__)
    parser.add_argument("--edges", type=int, default=2, help="edge processes (default 2)")
    parser.add_argument("--config", type=Path, help="the nodes' TOML configuration")
    parser.add_argument("--port", type=int, default=8080, help="origin port; edges follow")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--host", default="127.0.0.1", help="address the nodes listen on")
    parser.add_argument(
        "--public-host", default="127.0.0.1", help="host name viewers reach the nodes at"
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin CPUs")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.edges < 1:
        parser.error("--edges must be at least 1")
    return args


async def run(args: argparse.Namespace) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="meridian-redis-"))
    cluster = plan(
        args.edges,
        ports=range(args.port, args.port + args.edges + 1),
        redis_port=args.redis_port,
        data_dir=data_dir,
        config=args.config,
        host=args.host,
        public_host=args.public_host,
        pin=args.pin,
        log_level=args.log_level,
    )
    processes = [spawn(cluster.redis_argv, None, None)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        for node in cluster.nodes:
            processes.append(spawn(node.argv, node.env, node.cpus))
        for node, process in zip(cluster.nodes, processes[1:], strict=True):
            await wait_healthy(node.url, process, 60.0)
        origin = cluster.nodes[0]
        print(f"redis   {cluster.redis_url}", flush=True)
        for node in cluster.nodes:
            cpus = ",".join(map(str, sorted(node.cpus))) if node.cpus else "any"
            print(f"{node.name:<7} {node.url}  role={node.role} cpu={cpus}", flush=True)
        print(
            f"\nstudios publish to {origin.url}/whip/<studio>; viewers open any node, e.g. "
            f"{origin.url}/watch/demo (sent on to an edge); {origin.url}/api/cluster shows "
            "the directory. Ctrl-C stops everything.",
            flush=True,
        )
        waiting = [asyncio.ensure_future(stop.wait())] + [
            asyncio.ensure_future(asyncio.to_thread(p.wait)) for p in processes
        ]
        _, pending = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if not stop.is_set():
            print("a process of the cluster exited; stopping the others", file=sys.stderr)
            return 1
        return 0
    finally:
        stop_all(processes[1:])
        stop_all(processes[:1])
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    try:
        return asyncio.run(run(parse_args(argv)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
