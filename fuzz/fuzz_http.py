#!/usr/bin/env python3
"""Fuzz Meridian's HTTP surface over a real socket: WHIP/WHEP POST, PATCH and DELETE, the
JSON and admin APIs, pages, and every header they read (the input format is described in
fuzz/http_raw.py). Any 5xx, or no answer within 10 s, is a crash.

    python -m fuzz.fuzz_http fuzz/corpus/http -max_total_time=600
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["relay", "server", "metrics.geo", "aiortc.sdp", "fuzz"]):
    from aiohttp.test_utils import TestServer
    from prometheus_client import CollectorRegistry

    from fuzz.common import hostile_settings
    from fuzz.http_raw import RawClient
    from server.app import create_app


class Target:
    """Meridian in this process, on an event loop that runs while each input is sent."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        # Sessions that never connect stay for the whole run ({session} needs one).
        app = create_app(hostile_settings(connect_timeout=3600.0), CollectorRegistry())
        self.server = TestServer(app, host="127.0.0.1")
        self.loop.run_until_complete(self.server.start_server())
        assert self.server.port is not None
        self.client = RawClient(app, self.server.port)

    async def one(self, data: bytes) -> None:
        answer = await self.client.send(data)
        if answer.status >= 500:
            raise AssertionError(f"HTTP {answer.status} for {answer.request[:2000]!r}")
        await asyncio.sleep(0)  # let the server finish what the request started


TARGET: Target | None = None


def test_one_input(data: bytes) -> None:
    global TARGET
    if TARGET is None:
        TARGET = Target()
    TARGET.loop.run_until_complete(TARGET.one(data))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
