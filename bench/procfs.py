"""What the benchmark reads about processes and the machine from /proc (Linux only).

CPU time is what a process really spent (user + system, all its threads), never
wall-clock capacity: other processes on the machine do not inflate it.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of every thread of `pid` so far, in seconds (/proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return utime / _CLOCK_TICKS, stime / _CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid` so far, in seconds."""
    return sum(cpu_times(pid))


def run_queue_wait(pid: int) -> float:
    """Seconds the threads of `pid` have spent runnable but waiting for a CPU so far.

    The second field of /proc/<pid>/task/<tid>/schedstat: how much other work on the
    machine held the process back, which delays its packets without costing it CPU.
    """
    waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            waited += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return waited / 1e9


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` now (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets `pid` holds open (from its /proc/<pid>/fd links)."""
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(fd_dir / name)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def udp_drops(pids: list[int]) -> int:
    """Datagrams the kernel dropped on the UDP sockets of these processes so far.

    The `drops` column of /proc/net/udp{,6}: a full receive buffer, mostly. Summed
    over the sockets the processes hold now (a closed socket's drops are gone).
    """
    inodes: set[int] = set()
    for pid in pids:
        inodes |= socket_inodes(pid)
    drops = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 13 and int(fields[9]) in inodes:
                drops += int(fields[12])
    return drops


def load_average() -> tuple[float, float, float]:
    """The machine's 1, 5 and 15 minute load averages (/proc/loadavg)."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


@dataclass(frozen=True, slots=True)
class Machine:
    cpu_model: str
    logical_cpus: int
    usable_cpus: int
    python: str
    platform: str
    date: str  # ISO 8601, UTC

    def describe(self) -> str:
        return (
            f"{self.cpu_model}, {self.logical_cpus} logical CPUs ({self.usable_cpus} usable), "
            f"Python {self.python}, {self.platform}, {self.date}"
        )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> Machine:
    return Machine(
        cpu_model=cpu_model(),
        logical_cpus=os.cpu_count() or 0,
        usable_cpus=len(os.sched_getaffinity(0)),
        python=sys.version.split()[0],
        platform=platform.platform(),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
    )
