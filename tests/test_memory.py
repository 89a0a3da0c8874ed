"""Memory housekeeping (server/memory.py): freed heap pages go back to the system, a crowd's
garbage is collected once it has gone, and the admin API says where the memory is.

The burst test (test_load_burst.py) checks the same on a real process under a real crowd.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import weakref
from collections.abc import Iterator

import aiohttp
import pytest

from config.settings import AdminSettings
from server import memory
from tests.conftest import make_settings, serving, url
from tests.test_access import ADMIN, ADMIN_TOKEN

glibc_only = pytest.mark.skipif(memory.GLIBC is None, reason="malloc_trim is glibc's")


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    """Only the reclaimer may collect garbage while the test looks."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Cycle:
    """Garbage only the cyclic collector can free, like a closed peer connection."""

    def __init__(self) -> None:
        self.me = self


@glibc_only
def test_freed_heap_pages_go_back_to_the_system() -> None:
    # 64 MiB in blocks too large for CPython's own allocator, so glibc's heap holds them;
    # one in 64 stays alive, which keeps the heap from simply shrinking at its top.
    blocks = [bytes(2048) for _ in range(32 * 1024)]
    kept = blocks[::64]
    grown = memory.resident_bytes()
    del blocks
    released = memory.release_free_heap()
    assert released > 32 << 20, f"only {released / 2**20:.1f} MiB released"
    assert memory.resident_bytes() < grown - (32 << 20)
    assert len(kept) == 512


def test_a_crowd_and_its_tail_are_collected_a_few_leaving_are_not() -> None:
    crowd = memory.CrowdWatch(removed=10)
    # Sessions gone by each look (cumulative), and whether that look collects.
    looks = [
        (10, False),  # nobody left
        (10 + memory.CROWD_SESSIONS - 1, False),  # fewer than a crowd: no pause for them
        (10 + memory.CROWD_SESSIONS, True),  # now a crowd has gone
        (10 + memory.CROWD_SESSIONS + 3, True),  # its tail, after the look
        (10 + memory.CROWD_SESSIONS + 4, True),  # and the last of it
        (10 + memory.CROWD_SESSIONS + 4, False),  # departures stopped
        (10 + memory.CROWD_SESSIONS + 6, False),  # a few leaving now are no crowd
        (10 + 2 * memory.CROWD_SESSIONS + 4, True),  # but they add up to one
    ]
    assert [crowd.collect_now(removed) for removed, _ in looks] == [c for _, c in looks]


async def test_the_reclaimer_collects_the_garbage_a_crowd_left(
    no_automatic_collection: None,
) -> None:
    removed = 0
    reclaimer = asyncio.ensure_future(memory.reclaim_forever(lambda: removed, interval=0.05))
    await asyncio.sleep(0.01)  # it has counted the sessions gone so far: none
    try:
        cycle = Cycle()
        left = weakref.ref(cycle)
        del cycle
        await asyncio.sleep(0.2)
        assert left() is not None  # nobody left: no collection
        removed = memory.CROWD_SESSIONS
        await asyncio.sleep(0.2)
        assert left() is None
    finally:
        reclaimer.cancel()


async def test_the_admin_api_reports_memory(http: aiohttp.ClientSession) -> None:
    settings = dataclasses.replace(make_settings(), admin=AdminSettings(token=ADMIN_TOKEN))
    async with serving(settings) as server:
        async with http.get(url(server, "/admin/memory")) as response:
            assert response.status == 401
            assert response.content_type == "application/problem+json"
        async with http.get(url(server, "/admin/memory"), headers=ADMIN) as response:
            assert response.status == 200
            report = await response.json()
    assert report["resident_bytes"] > 16 << 20
    assert report["python_blocks"] > 10_000
    if memory.GLIBC is not None:
        assert report["heap_in_use_bytes"] > 1 << 20
        assert report["heap_free_bytes"] >= 0
    else:
        assert report["heap_in_use_bytes"] is None
