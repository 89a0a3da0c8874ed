"""Give the memory a crowd freed back to the system, and say where the memory is.

A peer connection is a web of objects that refer to each other, so when a crowd of
sessions ends (a burst of viewers that never connected, the close of an event) most of
its memory waits for CPython's cyclic garbage collector, and what is freed goes back to
the allocators, not to the system: glibc keeps freed pages inside its heap for reuse.
Every `RECLAIM_INTERVAL_SECONDS` the server process (run.py: the heap and the collector are
the process's, whatever applications it serves) therefore
- collects the garbage itself once `CROWD_SESSIONS` or more sessions have ended since its
  last collection (a pause of tens of milliseconds, right after the crowd; `CrowdWatch`),
- asks glibc to release its free pages (malloc_trim): a few milliseconds after a crowd,
  well under one when there is nothing to release. It runs on the event loop, not in a
  worker thread, because it holds glibc's heap lock meanwhile and the loop, which
  allocates for every packet, would wait for it anyway.

Start-up's objects (modules, settings, the application) live as long as the process;
`freeze_startup_objects` takes them out of the collector's sight, which makes every full
collection several times shorter.

CPython's small-object arenas (1 MiB each) go back only once every object in them is
freed, so a few long-lived objects made during a crowd keep some of them: the resident
size after a crowd settles at a bounded high-water mark above the cold start, while the
memory in use returns to where it was. `report()` gives both, for the admin API.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import gc
import logging
import os
import sys
import time
from collections.abc import Callable

log = logging.getLogger("meridian.memory")

RECLAIM_INTERVAL_SECONDS = 10.0
CROWD_SESSIONS = 32  # this many sessions gone within an interval: collect their garbage now
LOG_RELEASED_BYTES = 8 << 20  # a release this large is worth a line in the log
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes of heap obtained from the system (sbrk and arena heaps)
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in chunks mapped on their own (large allocations)
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use in the heap
            "fordblks",  # bytes free in the heap, kept for reuse
            "keepcost",
        )
    ]


def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc with malloc_trim and mallinfo2 (2.33+), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallinfo2.restype = _Mallinfo2
    except (OSError, AttributeError):  # musl, or an older glibc
        return None
    return libc


GLIBC = _glibc()


def resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


def release_free_heap() -> int:
    """Ask glibc to hand its free heap pages back; the bytes the resident size fell by."""
    if GLIBC is None:
        return 0
    before = resident_bytes()
    GLIBC.malloc_trim(0)
    return max(0, before - resident_bytes())


@dataclasses.dataclass(frozen=True)
class MemoryReport:
    resident_bytes: int
    python_blocks: int  # CPython's allocated memory blocks (objects and their buffers)
    heap_in_use_bytes: int | None  # glibc: in use by the program (None: not glibc)
    heap_free_bytes: int | None  # glibc: freed, kept inside the heap for reuse

    def as_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)


def report() -> MemoryReport:
    in_use = free = None
    if GLIBC is not None:
        info = GLIBC.mallinfo2()
        in_use, free = info.uordblks + info.hblkhd, info.fordblks
    return MemoryReport(resident_bytes(), sys.getallocatedblocks(), in_use, free)


def freeze_startup_objects() -> None:
    """Collect start-up's garbage, then keep what is left out of every later collection."""
    gc.collect()
    gc.freeze()


class CrowdWatch:
    """Says, at each look, whether enough sessions went for their garbage to be collected.

    A crowd is `CROWD_SESSIONS` sessions gone since the last collection. Its departure can
    straddle a look, so after a collection for a crowd the next look collects again if more
    went meanwhile: the crowd's tail is not left waiting for the next crowd.
    """

    def __init__(self, removed: int) -> None:
        self._collected_at = removed  # sessions gone by the last collection
        self._after_crowd = False

    def collect_now(self, removed: int) -> bool:
        gone = removed - self._collected_at
        self._after_crowd = gone >= CROWD_SESSIONS or (self._after_crowd and gone > 0)
        if self._after_crowd:
            self._collected_at = removed
        return self._after_crowd


async def reclaim_forever(
    removed_sessions: Callable[[], int], interval: float = RECLAIM_INTERVAL_SECONDS
) -> None:
    """Collect after a crowd and release free heap pages, every `interval` seconds."""
    crowd = CrowdWatch(removed_sessions())
    while True:
        await asyncio.sleep(interval)
        if crowd.collect_now(removed_sessions()):
            gc.collect()
        started = time.perf_counter()
        released = release_free_heap()
        if released >= LOG_RELEASED_BYTES:
            log.info(
                "returned %.1f MiB of freed memory to the system in %.1f ms",
                released / 2**20,
                (time.perf_counter() - started) * 1000,
            )
