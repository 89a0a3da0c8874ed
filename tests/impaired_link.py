"""A network namespace for a test studio, joined to this host by a link that loses and delays.

The studio runs inside a namespace the test creates (`ip netns`); its only way out is one
point-to-point link to the root namespace, in a private range that exists nowhere else
(10.203.N.0/30: the host end .1, the studio's end .2). Both directions of the link lose
`loss` of their packets at random and hold every other one `delay` seconds:

- `netem`: a veth pair with `tc qdisc ... netem loss 5% delay 100ms` on both ends, where
  the kernel has the netem qdisc (CONFIG_NET_SCH_NETEM);
- `wire`: otherwise (this project's CI kernel is built without netem), two TUN devices,
  one in each namespace, and a small process between them that does what netem would:
  `python -m tests.impaired_link --host-dev ... --ns-dev ...` reads each IP packet from one
  device, drops it with probability `loss`, writes it to the other `delay` seconds later,
  and reports what it forwarded and dropped on SIGTERM.

`MERIDIAN_LINK=netem` or `MERIDIAN_LINK=wire` forces one. While the link exists a
blackhole route covers its /24 in the root namespace, so that nothing addressed to the
test range can ever leave the machine, even after the link is gone and a late packet
(an ICE consent check) is still sent to the studio's old address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import heapq
import json
import os
import random
import re
import select
import shutil
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent

# <linux/if_tun.h>
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000


class LinkError(RuntimeError):
    pass


@dataclass
class Direction:
    """What one direction of the link did: packets it was given, and those it dropped."""

    packets: int = 0
    dropped: int = 0

    @property
    def loss(self) -> float:
        return self.dropped / self.packets if self.packets else 0.0


@dataclass
class ImpairedLink:
    namespace: str
    host_address: str  # the root namespace's end: servers listen here
    studio_address: str  # the namespace's end
    method: str  # "netem" or "wire"
    loss: float
    delay: float
    host_dev: str
    ns_dev: str
    # Filled in when the link is taken down: studio->host ("up") and host->studio ("down").
    up: Direction = field(default_factory=Direction)
    down: Direction = field(default_factory=Direction)

    def command_in_namespace(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def describe(self) -> str:
        return (
            f"{self.method}: loss {self.loss:.0%} and delay {self.delay * 1000:.0f} ms each way; "
            f"studio->relay {self.up.dropped}/{self.up.packets} packets dropped "
            f"({self.up.loss:.2%}), relay->studio {self.down.dropped}/{self.down.packets} "
            f"({self.down.loss:.2%})"
        )


async def run(*argv: str, check: bool = True) -> str:
    """Run a command (ip, tc) and return its output; LinkError if it fails and `check`."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    text = output.decode(errors="replace")
    if check and process.returncode != 0:
        raise LinkError(f"{' '.join(argv)} failed ({process.returncode}): {text.strip()}")
    return text


async def kernel_has_netem(namespace: str) -> bool:
    """Try a netem qdisc on the namespace's own loopback (harmless, gone with the namespace)."""
    probe = f"ip netns exec {namespace} tc qdisc add dev lo root netem delay 1ms"
    output = await run(*probe.split(), check=False)
    if output.strip():
        return False
    await run(*f"ip netns exec {namespace} tc qdisc del dev lo root".split())
    return True


def choose_method(has_netem: bool) -> str:
    forced = os.environ.get("MERIDIAN_LINK", "")
    if forced == "netem" and not has_netem:
        raise LinkError(
            "MERIDIAN_LINK=netem, but this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM)"
        )
    if forced in ("netem", "wire"):
        return forced
    return "netem" if has_netem else "wire"


@asynccontextmanager
async def impaired_link(
    loss: float = 0.05, delay: float = 0.1, seed: int | None = None
) -> AsyncIterator[ImpairedLink]:
    """Create the namespace and its lossy link; remove everything again whatever happens."""
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise LinkError(f"`{tool}` is missing: install Debian's iproute2 (make system-deps)")
    tag = os.getpid() % 10000
    subnet = 10 + os.getpid() % 240
    link = ImpairedLink(
        namespace=f"meridian-test-{os.getpid()}",
        host_address=f"10.203.{subnet}.1",
        studio_address=f"10.203.{subnet}.2",
        method="",
        loss=loss,
        delay=delay,
        host_dev=f"mrd{tag}h",
        ns_dev=f"mrd{tag}n",
    )
    blackhole = f"10.203.{subnet}.0/24"
    wire: asyncio.subprocess.Process | None = None
    await run("ip", "netns", "add", link.namespace)
    try:
        await run("ip", "route", "replace", "blackhole", blackhole)
        link.method = choose_method(await kernel_has_netem(link.namespace))
        if link.method == "netem":
            await _veth_with_netem(link)
        else:
            wire = await _tun_wire(link, seed if seed is not None else random.getrandbits(32))
        await _address_both_ends(link)
        yield link
    finally:
        if wire is not None:
            await _stop_wire(wire, link)
        elif link.method == "netem":
            await _read_netem_drops(link)
        await run("ip", "netns", "del", link.namespace, check=False)
        await run("ip", "link", "del", link.host_dev, check=False)  # gone with the netns, or not
        await run("ip", "route", "del", "blackhole", blackhole, check=False)


async def _veth_with_netem(link: ImpairedLink) -> None:
    await run(
        *f"ip link add {link.host_dev} type veth peer name {link.ns_dev}".split(),
        *("netns", link.namespace),
    )
    netem = ["root", "netem", "loss", f"{link.loss * 100:g}%", "delay", f"{link.delay * 1000:g}ms"]
    await run("tc", "qdisc", "add", "dev", link.host_dev, *netem)
    await run(*link.command_in_namespace("tc", "qdisc", "add", "dev", link.ns_dev, *netem))


async def _read_netem_drops(link: ImpairedLink) -> None:
    """The netem qdiscs' own counts: packets sent and dropped on each end."""

    async def counts(argv: list[str]) -> Direction:
        text = await run(*argv, check=False)
        found = re.search(r"Sent \d+ bytes (\d+) pkt \(dropped (\d+)", text)
        if found is None:
            return Direction()
        sent, dropped = int(found[1]), int(found[2])
        return Direction(sent + dropped, dropped)

    link.up = await counts(
        link.command_in_namespace("tc", "-s", "qdisc", "show", "dev", link.ns_dev)
    )
    link.down = await counts(["tc", "-s", "qdisc", "show", "dev", link.host_dev])


async def _tun_wire(link: ImpairedLink, seed: int) -> asyncio.subprocess.Process:
    """Start the wire process: it creates both TUN devices; one is then moved into the netns."""
    wire = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.impaired_link"),
        *("--host-dev", link.host_dev, "--ns-dev", link.ns_dev),
        *("--loss", str(link.loss), "--delay", str(link.delay), "--seed", str(seed)),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert wire.stdout is not None
    line = await asyncio.wait_for(wire.stdout.readline(), 15)
    if line.strip() != b"ready":
        rest = await asyncio.wait_for(wire.stdout.read(), 5)
        raise LinkError(f"the link process did not start: {(line + rest).decode(errors='replace')}")
    await run("ip", "link", "set", "dev", link.ns_dev, "netns", link.namespace)
    return wire


async def _stop_wire(wire: asyncio.subprocess.Process, link: ImpairedLink) -> None:
    if wire.returncode is None:
        wire.send_signal(signal.SIGTERM)
    assert wire.stdout is not None
    try:
        output = await asyncio.wait_for(wire.stdout.read(), 10)
        await asyncio.wait_for(wire.wait(), 5)
    except TimeoutError:
        wire.kill()
        await wire.wait()
        return
    for line in output.decode(errors="replace").splitlines():
        if line.startswith("{"):
            stats = json.loads(line)
            link.up = Direction(**stats["up"])
            link.down = Direction(**stats["down"])


async def _address_both_ends(link: ImpairedLink) -> None:
    ns = link.command_in_namespace
    if link.method == "netem":
        await run("ip", "addr", "add", f"{link.host_address}/30", "dev", link.host_dev)
        await run(*ns("ip", "addr", "add", f"{link.studio_address}/30", "dev", link.ns_dev))
    else:  # point to point: each end names the other
        host_end = f"{link.host_address} peer {link.studio_address} dev {link.host_dev}"
        studio_end = f"{link.studio_address} peer {link.host_address} dev {link.ns_dev}"
        await run("ip", "addr", "add", *host_end.split())
        await run(*ns("ip", "addr", "add", *studio_end.split()))
    await run("ip", "link", "set", "dev", link.host_dev, "up")
    await run(*ns("ip", "link", "set", "dev", link.ns_dev, "up"))
    await run(*ns("ip", "link", "set", "dev", "lo", "up"))
    # No default route in the namespace: the studio reaches the host end and nothing else.


# ----------------------------------------------------------------------------- the wire


def open_tun(name: str) -> int:
    """Create a TUN device (gone when the descriptor closes) and return its descriptor."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", name.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


def wire(host_dev: str, ns_dev: str, loss: float, delay: float, seed: int) -> dict[str, object]:
    """Forward IP packets between the two devices with loss and delay, until SIGTERM."""
    rng = random.Random(seed)
    host, studio = open_tun(host_dev), open_tun(ns_dev)
    peer = {host: studio, studio: host}
    stats = {studio: Direction(), host: Direction()}  # keyed by the device read from
    queue: list[tuple[float, int, int, bytes]] = []  # (due, order, to, packet)
    order = 0
    running = True

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    parent = os.getppid()
    print("ready", flush=True)
    while running and os.getppid() == parent:  # never outlive the test
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 0.5
        try:
            readable, _, _ = select.select([host, studio], [], [], timeout)
        except InterruptedError:
            continue
        for fd in readable:
            with contextlib.suppress(BlockingIOError):
                while True:
                    packet = os.read(fd, 65536)
                    stats[fd].packets += 1
                    if rng.random() < loss:
                        stats[fd].dropped += 1
                        continue
                    order += 1
                    heapq.heappush(queue, (time.monotonic() + delay, order, peer[fd], packet))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, to, packet = heapq.heappop(queue)
            with contextlib.suppress(OSError):  # the device may be down already
                os.write(to, packet)
    return {"up": vars(stats[studio]), "down": vars(stats[host]), "seed": seed}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="A lossy, slow point-to-point link (TUN).")
    parser.add_argument("--host-dev", required=True)
    parser.add_argument("--ns-dev", required=True)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    stats = wire(args.host_dev, args.ns_dev, args.loss, args.delay, args.seed)
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
