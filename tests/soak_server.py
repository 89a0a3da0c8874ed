"""Meridian (`run.py`) in a process of its own that tells the soak test what it holds inside.

On SIGUSR1 it writes, to the file named by MERIDIAN_SOAK_PROBE, a JSON object with its
asyncio tasks (how many, and the most common coroutines), the peer connections not yet
closed, the sessions in its registry and its threads. With MERIDIAN_SOAK_TRACEMALLOC=1 it
also traces allocations and reports the lines whose memory grew most since the first
probe (slow; for finding a leak). Nothing else differs from run.py; no endpoint is added,
and the product itself has no such hook.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import threading
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run
from server.sessions import SessionRegistry

_serve = run.serve
_first_snapshot: list[tracemalloc.Snapshot] = []

if os.environ.get("MERIDIAN_SOAK_TRACEMALLOC") == "1":
    tracemalloc.start(4)


def memory_growth() -> list[str]:
    """The source lines whose allocations grew most since the first probe."""
    if not tracemalloc.is_tracing():
        return []
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    if not _first_snapshot:
        _first_snapshot.append(snapshot)
        return []
    return [
        f"{stat.size_diff / 1024:+.0f} KiB in {stat.count_diff:+d} blocks at {stat.traceback[0]}"
        for stat in snapshot.compare_to(_first_snapshot[0], "lineno")[:10]
    ]


def task_name(task: asyncio.Task[Any]) -> str:
    coroutine = task.get_coro()
    return getattr(coroutine, "__qualname__", type(coroutine).__name__)


def write_probe() -> None:
    gc.collect()
    objects = gc.get_objects()
    open_connections = sum(
        1
        for obj in objects
        if isinstance(obj, RTCPeerConnection) and obj.connectionState != "closed"
    )
    sessions = sum(len(obj) for obj in objects if isinstance(obj, SessionRegistry))
    tasks = asyncio.all_tasks()
    probe = {
        "tasks": len(tasks),
        "task_kinds": dict(Counter(task_name(t) for t in tasks).most_common(12)),
        "peer_connections": open_connections,
        "sessions": sessions,
        "threads": threading.active_count(),
        "memory_growth": memory_growth(),
    }
    path = Path(os.environ["MERIDIAN_SOAK_PROBE"])
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(probe))
    partial.replace(path)


async def serve(*args: Any, **kwargs: Any) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, write_probe)
    await _serve(*args, **kwargs)


run.serve = serve

if __name__ == "__main__":
    sys.exit(run.main(sys.argv[1:]))
