"""SIGTERM on a real process: no new sessions, every session ended cleanly, exit within 5 s.

A studio and two viewers (real aiortc peers) are connected when Meridian gets SIGTERM. Each
must see its connection closed by the server (DTLS close_notify makes aiortc close the peer
connection: state "closed"), within about a second, not find out by a consent timeout
(tens of seconds, state "failed"). The process exits with status 0 within 5 s.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from tests.conftest import TOKENS
from tests.rtc_peers import publishing, watching
from tests.server_process import running_server
from tests.test_reload import wait_live_at

EXIT_WITHIN = 5.0


def final_states(
    pcs: dict[str, RTCPeerConnection], since: list[float]
) -> dict[str, tuple[str, float]]:
    """Fills, for each peer connection, its final state and the seconds from `since[0]`."""
    seen: dict[str, tuple[str, float]] = {}
    for name, pc in pcs.items():

        def on_state(name: str = name, pc: RTCPeerConnection = pc) -> None:
            if pc.connectionState in ("closed", "failed") and name not in seen:
                seen[name] = (pc.connectionState, time.monotonic() - since[0])

        pc.on("connectionstatechange", on_state)
    return seen


@pytest.mark.timeout(60)
async def test_sigterm_ends_every_session_cleanly_and_exits_within_5_s(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(tmp_path, {"berlin": TOKENS["berlin"]}) as server:
        base = server.base_url
        async with publishing(http, base + "/whip/berlin", TOKENS["berlin"]) as studio:
            await wait_live_at(http, base, "berlin")
            async with (
                watching(http, base + "/whep/berlin") as first,
                watching(http, base + "/whep/berlin") as second,
            ):
                await first.frames(3)
                await second.frames(3)
                since = [0.0]
                pcs = {"studio": studio.pc, "first": first.pc, "second": second.pc}
                ended = final_states(pcs, since)
                since[0] = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                while server.process.poll() is None:
                    assert time.monotonic() - since[0] < EXIT_WITHIN + 1, "still running"
                    await asyncio.sleep(0.02)
                exited = time.monotonic() - since[0]
                for _ in range(100):
                    if len(ended) == len(pcs):
                        break
                    await asyncio.sleep(0.05)
        print(f"\nSIGTERM: exit after {exited:.2f} s; peers ended:", ended)
        assert server.process.returncode == 0
        assert exited < EXIT_WITHIN
        for name in pcs:
            state, after = ended.get(name, ("still open", 0.0))
            assert state == "closed", f"{name} was not closed cleanly: {ended}"
            assert after < 2.0, f"{name} saw the closure late: {ended}"
        log = server.log()
        assert "shutting down" in log and "stopped" in log
        assert log.count("reason=shutdown") == 3
